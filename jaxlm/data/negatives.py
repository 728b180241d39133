"""Other documents for NSP's NotNext segments: a random document of the split, by the seed.

BERT takes the B of a NotNext pair from a random document of the corpus. The pipeline does the
same for objectives whose form has `other_documents` (registry.py): for each example it reads one
record chosen by the example's seed from the split's ArrayRecord files (records.py), tokenizes it
the way the pipeline tokenizes, and draws again while the record is the example's own document or
gives no token. So an example depends on its own position only (never on its batch): the same
after a restart, on any number of hosts and batch sizes, and NotNext is drawn in exactly half of
the pairs whatever the sequence length.

"The example's own document" is the document of A, the text before the first EOS of the example's
tokens: the document of its first token, or, when that token is the EOS ending a document (concat
chunks can start there), the next document that has tokens.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from jaxlm.data.records import Documents, epoch_indices
from jaxlm.objectives.common import STREAM_NSP_OTHER, rng

# A split in which this many draws in a row hit the example's own or token-less documents has
# (almost) nothing else to offer: the example then gets no other document (a true pair).
MAX_DRAWS = 64
CACHE_DOCUMENTS = 4096  # tokenized documents kept (most recently used)


class OtherDocuments:
    """Seeded draws of whole tokenized documents of one split part (read by index)."""

    def __init__(self, records: Documents, vocab: Any, *, block: int, seed: int) -> None:
        self._records, self._vocab = records, vocab
        self._block, self._seed = int(block), int(seed)
        self._num = len(records)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()  # tf.data may run several batches' draws at once

    def record(self, epoch: int, doc: int) -> int:
        """The record index of document `doc` of epoch `epoch` (the pipeline's shuffled order)."""
        kw = dict(num=self._num, block=self._block, seed=self._seed, epoch=int(epoch))
        return int(epoch_indices(int(doc), int(doc) + 1, **kw)[0])

    def _load(self, records: Sequence[int]) -> None:
        """Reads and tokenizes the records not cached yet, in one read (10x cheaper per record
        than one at a time)."""
        with self._lock:
            missing = sorted({int(r) for r in records} - self._cache.keys())
        if missing:
            self._store(dict(zip(missing, map(self._tokenize, self._records.read(missing)),
                                 strict=True)))

    def _store(self, tokens: dict[int, np.ndarray]) -> None:
        with self._lock:
            self._cache.update(tokens)
            while len(self._cache) > max(CACHE_DOCUMENTS, len(tokens)):
                self._cache.popitem(last=False)

    def _tokenize(self, raw: bytes) -> np.ndarray:
        # Whitespace-only text gives no token: the pipeline skips such documents.
        if not raw.decode("utf-8", errors="replace").strip():
            return np.zeros(0, np.int32)
        return self._vocab.encode_bytes(raw)

    def tokens(self, record: int) -> np.ndarray:
        """The document's tokens, empty for whitespace-only text (which the pipeline skips)."""
        with self._lock:
            found = self._cache.get(record)
            if found is not None:
                self._cache.move_to_end(record)
                return found
        found = self._tokenize(self._records.read([record])[0])
        self._store({record: found})
        return found

    def next_with_tokens(self, epoch: int, doc: int) -> int | None:
        """The record of the first document after (epoch, doc) that has tokens, None if none."""
        for _ in range(self._num):
            doc += 1
            if doc == self._num:
                epoch, doc = epoch + 1, 0
            record = self.record(epoch, doc)
            if self.tokens(record).size:
                return record
        return None

    def _candidates(self, seed: int) -> Iterator[int]:
        gen = rng(seed, STREAM_NSP_OTHER)
        return (int(gen.integers(self._num)) for _ in range(MAX_DRAWS))

    def draw(self, seed: int, exclude: Sequence[int]) -> list[np.ndarray]:
        """[tokens of a uniformly random document with tokens, not in `exclude`], by the seed;
        [] if MAX_DRAWS draws find none."""
        return self.draws([seed], [exclude])[0]

    def draws(self, seeds: Sequence[int], excludes: Sequence[Sequence[int]]
              ) -> list[list[np.ndarray]]:
        """`draw` for many examples, their first candidates read together."""
        candidates = [self._candidates(int(s)) for s in seeds]
        first = [next(c) for c in candidates]
        self._load(first)
        out = []
        for f, rest, exclude in zip(first, candidates, excludes, strict=True):
            found = next((r for r in itertools.chain([f], rest)
                          if r not in exclude and self.tokens(r).size), None)
            out.append([] if found is None else [self.tokens(found)])
        return out

    def for_chunks(
        self, chunks: Sequence[np.ndarray], starts: np.ndarray, seeds: np.ndarray, eos_id: int
    ) -> list[list[np.ndarray]]:
        """concat: one draw per chunk; starts[i] = (epoch, doc, offset) of chunk i's first token."""
        excludes = []
        for chunk, (epoch, doc, _) in zip(chunks, starts, strict=True):
            own = [self.record(epoch, doc)]
            if chunk.size and chunk[0] == eos_id:  # A is the next document's start
                after = self.next_with_tokens(int(epoch), int(doc))
                own += [] if after is None else [after]
            excludes.append(own)
        return self.draws(seeds, excludes)

    def for_pieces(self, epoch: int, docs: np.ndarray, seeds: np.ndarray) -> list[list[np.ndarray]]:
        """greedy / none: one draw per piece; docs[i]: the index in the epoch of piece i's
        document (a piece never spans two documents)."""
        return self.draws(seeds, [[self.record(epoch, doc)] for doc in docs])
