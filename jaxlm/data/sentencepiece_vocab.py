"""SentencePiece vocabularies: a model's pieces plus sentinels above them; training and caching.

Trained here (`train_sentencepiece`, `get_or_train_sentencepiece`): pieces 0..vocab_size-101 are
the SentencePiece model: 0 <pad>, 1 </s>, 2 <unk>, 3 [MASK], 4 [NLU], 5 [S2S], 6 [NLG]
(user-defined symbols), 7..262 byte-fallback pieces, then the learned pieces; the 100 sentinels
are the ids above. `SentencePieceVocabulary.load(path)` of a model made elsewhere (T5's
spiece.model) puts [MASK] and the mode ids just below the sentinels; see tokenizer.py's module
docstring for both layouts.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from jaxlm import io as jaxlm_io
from jaxlm.conventions import EOS_ID, NUM_SENTINELS, PAD_ID, UNK_ID
from jaxlm.data.tokenizer import (
    MASK_TOKEN,
    MIN_PIECES,
    MODE_TOKENS,
    NUM_BYTES,
    USER_DEFINED_SYMBOLS,
    VOCAB_MULTIPLE,
    Vocabulary,
    round_up,
)

logger = logging.getLogger(__name__)


class SentencePieceVocabulary(Vocabulary):
    """A SentencePiece model plus sentinels (and, for foreign models, mask / mode ids) above it."""

    def __init__(
        self,
        model_proto: bytes,
        *,
        vocab_size: int | None = None,
        t5_sentinels: bool = False,
        path: str | None = None,
    ) -> None:
        import sentencepiece as spm

        self._proto = bytes(model_proto)
        self._path = path
        self._t5_sentinels = t5_sentinels
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        sp = self._sp
        pieces = sp.get_piece_size()
        self.num_pieces = pieces
        where = f" ({path})" if path else ""
        if (sp.pad_id(), sp.eos_id(), sp.unk_id()) != (PAD_ID, EOS_ID, UNK_ID):
            raise ValueError(
                f"SentencePiece model{where} has pad/eos/unk ids {sp.pad_id()}/{sp.eos_id()}/"
                f"{sp.unk_id()}; jaxlm needs the T5 convention 0/1/2"
            )
        found = {s: sp.piece_to_id(s) for s in USER_DEFINED_SYMBOLS}
        found = {s: i for s, i in found.items() if i != sp.unk_id() and sp.id_to_piece(i) == s}
        if found and len(found) != len(USER_DEFINED_SYMBOLS):
            raise ValueError(
                f"SentencePiece model{where} has {sorted(found)} but not all of "
                f"{list(USER_DEFINED_SYMBOLS)}"
            )
        needed = pieces + NUM_SENTINELS + (0 if found else len(USER_DEFINED_SYMBOLS))
        if vocab_size is None:
            vocab_size = round_up(needed)
        _check_vocab_size(vocab_size, needed, f"a SentencePiece model of {pieces} pieces{where}")
        self._vocab_size = vocab_size
        regular = [
            i
            for i in range(pieces)
            if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i))
            and sp.id_to_piece(i) not in USER_DEFINED_SYMBOLS
        ]
        if len(regular) < MIN_PIECES:
            raise ValueError(
                f"vocab_size={vocab_size}: the SentencePiece model{where} has {len(regular)} "
                f"regular pieces; at least {MIN_PIECES} are needed"
            )
        if found:
            self._mask_id = found[MASK_TOKEN]
            self._mode_ids = {m: found[t] for m, t in MODE_TOKENS.items()}
        else:
            base = pieces + NUM_SENTINELS if t5_sentinels else vocab_size - NUM_SENTINELS - 4
            self._mask_id = base
            self._mode_ids = {m: base + 1 + k for k, m in enumerate(MODE_TOKENS)}
        self._top = pieces + NUM_SENTINELS - 1 if t5_sentinels else vocab_size - 1
        first_regular = max(i for i in (PAD_ID, EOS_ID, UNK_ID, *found.values())) + 1
        self._regular_ids = range(first_regular, pieces)
        # Ids decoded by SentencePiece: every piece but pad / eos (control) and unk.
        specials = {PAD_ID, EOS_ID, UNK_ID}
        self._regular_lookup = frozenset(i for i in range(pieces) if i not in specials)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, vocab_size: int | None = None, t5_sentinels: bool = False
    ) -> SentencePieceVocabulary:
        """A vocabulary from a `.model` file (see the module docstring for the id layout)."""
        path = os.fspath(path)
        proto = jaxlm_io.read_bytes(path)
        return cls(proto, vocab_size=vocab_size, t5_sentinels=t5_sentinels, path=path)

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def model_proto(self) -> bytes:
        return self._proto

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def _sentinel_top(self) -> int:
        return self._top

    @property
    def mask_id(self) -> int:
        return self._mask_id

    @property
    def mode_ids(self) -> dict[str, int]:
        return dict(self._mode_ids)

    @property
    def regular_ids(self) -> range:
        return self._regular_ids

    def _regular_set(self) -> frozenset[int]:
        return self._regular_lookup

    def _special_names(self) -> dict[int, str]:
        names = super()._special_names()
        names[self.unk_id] = " \u2047 "  # what SentencePiece itself renders for unk
        return names

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int, num_threads=_num_threads())

    def _decode_regular(self, ids: list[int], continuation: bool) -> str:
        text = self._sp.decode(ids)
        # SentencePiece drops the leading word-boundary space of what it decodes; keep it mid-text.
        if continuation and self._sp.id_to_piece(ids[0]).startswith("\u2581"):
            text = " " + text
        return text

    def __getstate__(self) -> dict[str, Any]:
        return {
            "model_proto": self._proto,
            "vocab_size": self._vocab_size,
            "t5_sentinels": self._t5_sentinels,
            "path": self._path,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("model_proto"), **state)

    def __repr__(self) -> str:
        return (
            f"SentencePieceVocabulary(path={self._path!r}, pieces={self.num_pieces}, "
            f"vocab_size={self.vocab_size})"
        )


def _check_vocab_size(vocab_size: int, needed: int, what: str) -> None:
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size % VOCAB_MULTIPLE:
        raise ValueError(f"vocab_size={vocab_size!r}: must be a multiple of {VOCAB_MULTIPLE}")
    if vocab_size < needed:
        raise ValueError(
            f"vocab_size={vocab_size}: too small for {what} plus {NUM_SENTINELS} sentinels "
            f"(needs >= {needed}, i.e. {round_up(needed)})"
        )


def _num_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


# --------------------------------------------------------------------------------------------------
# Training and caching
# --------------------------------------------------------------------------------------------------

_SPECIAL_PIECES = 3 + len(USER_DEFINED_SYMBOLS)  # pad, eos, unk, [MASK], [NLU], [S2S], [NLG]
MIN_TRAINED_VOCAB_SIZE = round_up(_SPECIAL_PIECES + NUM_BYTES + MIN_PIECES + NUM_SENTINELS)  # 640
_RECIPE_VERSION = 1  # bump when the training settings below change, to invalidate cached models


def _training_settings(
    vocab_size: int, model_type: str, character_coverage: float
) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size - NUM_SENTINELS,  # SentencePiece pieces; sentinels live above them
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        user_defined_symbols=list(USER_DEFINED_SYMBOLS),
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        max_sentence_length=16384,
    )


def _training_lines(
    texts: Iterable[str], max_chars: int | None, max_documents: int | None, stats: dict[str, int]
) -> Iterable[str]:
    """Non-empty lines of the first documents (SentencePiece trains on lines)."""
    chars = 0
    for n, text in enumerate(texts):
        if (max_documents is not None and n >= max_documents) or (
            max_chars is not None and chars >= max_chars
        ):
            break
        stats["documents"] += 1
        for line in text.split("\n"):
            if line.strip():
                chars += len(line)
                yield line
    stats["chars"] = chars


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    model_dir: str | os.PathLike,
    model_name: str | None = None,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_chars: int | None = 50_000_000,
    max_documents: int | None = None,
) -> str:
    """Train a SentencePiece model for a `vocab_size`-id vocabulary; returns the `.model` path.

    The model has vocab_size - 100 pieces (pad 0, eos 1, unk 2, [MASK] [NLU] [S2S] [NLG] 3..6,
    byte fallback); the 100 sentinels are the ids above. Reads at most `max_documents` documents /
    about `max_chars` characters. The file appears atomically (jaxlm.io.write_bytes;
    `model_dir` may be a gs:// URI).
    """
    import sentencepiece as spm

    _check_vocab_size(
        vocab_size,
        MIN_TRAINED_VOCAB_SIZE,
        f"{_SPECIAL_PIECES} special pieces, {NUM_BYTES} byte pieces, {MIN_PIECES} pieces",
    )
    path = jaxlm_io.join(model_dir, (model_name or f"spm_{vocab_size}") + ".model")
    settings = _training_settings(vocab_size, model_type, character_coverage)
    stats = {"documents": 0, "chars": 0}
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_training_lines(texts, max_chars, max_documents, stats)),
            model_writer=model,
            num_threads=_num_threads(),
            minloglevel=2,
            **settings,
        )
    except RuntimeError as e:
        if stats["chars"] == 0:
            raise ValueError("train_sentencepiece: no text to train on") from e
        hint = ""
        limit = re.search(r"<= (\d+)", str(e))
        if limit:  # "Vocabulary size too high (...). Please set it to a value <= N." (pieces)
            most = (int(limit.group(1)) + NUM_SENTINELS) // VOCAB_MULTIPLE * VOCAB_MULTIPLE
            hint = f"; this text allows vocab_size <= {most}"
        raise ValueError(
            f"vocab_size={vocab_size}: SentencePiece training failed on {stats['documents']} docs "
            f"({stats['chars']} chars){hint}: {e}"
        ) from e
    jaxlm_io.write_bytes(path, model.getvalue())
    logger.info(
        "trained SentencePiece %s on %d documents (%d chars)",
        path,
        stats["documents"],
        stats["chars"],
    )
    return path


# How long a process waits for process 0 to train a shared vocabulary (50M characters: minutes).
_TRAINING_WAIT_S = 3600.0


def _trains_here(path: str) -> bool:
    """Whether this process trains the cached model at `path`: on a URI (one store all hosts
    share) only process 0 does and the others wait; a local path is per host, so every process
    trains its own copy (the write is atomic, so racing processes on one host are harmless)."""
    return jaxlm_io.is_writer() or not jaxlm_io.is_uri(path)


def sentencepiece_cache_path(
    dataset_name: str,
    *,
    vocab_size: int,
    data_dir: str | os.PathLike,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_chars: int | None = 50_000_000,
    max_documents: int | None = None,
) -> str:
    """`{data_dir}/vocab/{dataset}_{vocab_size}_{hash of the settings}.model`."""
    settings = _training_settings(vocab_size, model_type, character_coverage)
    settings.update(
        dataset=dataset_name,
        max_chars=max_chars,
        max_documents=max_documents,
        recipe=_RECIPE_VERSION,
    )
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset_name)
    return jaxlm_io.join(data_dir, "vocab", f"{safe}_{vocab_size}_{digest}.model")


def get_or_train_sentencepiece(
    dataset_name: str,
    text_iterator_factory: Callable[[], Iterable[str]],
    *,
    vocab_size: int,
    data_dir: str | os.PathLike,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_chars: int | None = 50_000_000,
    max_documents: int | None = None,
) -> SentencePieceVocabulary:
    """The cached SentencePiece vocabulary of `dataset_name`, trained on first use.

    `text_iterator_factory()` (called only when training) yields the documents to train on.
    """
    options = dict(
        model_type=model_type,
        character_coverage=character_coverage,
        max_chars=max_chars,
        max_documents=max_documents,
    )
    path = sentencepiece_cache_path(
        dataset_name, vocab_size=vocab_size, data_dir=data_dir, **options
    )
    if jaxlm_io.exists(path):
        logger.info("reusing SentencePiece model %s", path)
    elif not _trains_here(path):
        logger.info("waiting for process 0 to train SentencePiece model %s", path)
        jaxlm_io.wait_for(path, timeout_s=_TRAINING_WAIT_S)
    else:
        _check_vocab_size(
            vocab_size,
            MIN_TRAINED_VOCAB_SIZE,
            f"{_SPECIAL_PIECES} special pieces, {NUM_BYTES} byte pieces, {MIN_PIECES} pieces",
        )
        name = jaxlm_io.path(path).name[: -len(".model")]
        train_sentencepiece(
            text_iterator_factory(),
            vocab_size=vocab_size,
            model_dir=os.fspath(jaxlm_io.path(path).parent),
            model_name=name,
            **options,
        )
    return SentencePieceVocabulary.load(path, vocab_size=vocab_size)
