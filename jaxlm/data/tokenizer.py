"""Vocabularies: byte-level and SentencePiece, with the T5 special-id layout and UL2 mode tokens.

Every vocabulary has pad 0, eos 1, unk 2, a [MASK] id, the UL2 mode ids [NLU] [S2S] [NLG], and 100
span-corruption sentinels at the top: `sentinel_id(i) = vocab_size - 1 - i` is T5's `<extra_id_i>`.
`vocab_size` is the model's vocabulary (embedding rows), always a multiple of 128.

ByteVocabulary (no training):
    0 pad, 1 eos, 2 unk, 3 [MASK], 4 [NLU], 5 [S2S], 6 [NLG], 7..262 the bytes 0..255,
    263..283 unused, 284..383 sentinels (<extra_id_99> .. <extra_id_0>); vocab_size 384.

SentencePieceVocabulary, trained here (`train_sentencepiece`, `get_or_train_sentencepiece`):
    pieces 0..vocab_size-101 are the SentencePiece model: 0 <pad>, 1 </s>, 2 <unk>, 3 [MASK],
    4 [NLU], 5 [S2S], 6 [NLG] (user-defined symbols: the literal text "[MASK]" encodes to the mask
    id), 7..262 byte-fallback pieces <0x00>..<0xFF> (nothing maps to unk), then the learned pieces;
    vocab_size-100.. vocab_size-1 the sentinels. Normalization is the identity and whitespace is
    kept, so decode(encode(text)) == text for any text.

SentencePieceVocabulary.load(path) of a model made elsewhere (e.g. T5's public spiece.model: 32000
    pieces with pad 0, eos 1, unk 2): the model's P pieces, then unused ids, then [MASK] [NLU] [S2S]
    [NLG] just below the sentinel block, at vocab_size-104 .. vocab_size-101, and the 100 sentinels
    at the top; vocab_size = P + 104 rounded up to a multiple of 128 (T5: 32128, sentinels
    32028..32127, mask 32024, modes 32025..32027, 32000..32023 unused). Note that T5's own
    checkpoints put `<extra_id_0>` at 32099 (the top of a 32100-id vocabulary, padded to 32128);
    `load(path, t5_sentinels=True)` gives that layout instead (sentinel_id(i) = P + 99 - i, mask and
    modes at P + 100 .. P + 103), for use with T5 weights.

TensorFlow is imported lazily (only the tf_* methods need it), with its GPUs hidden (`import_tf`).
"""

from __future__ import annotations

import abc
import hashlib
import io
import itertools
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SENTINELS = 100
MASK_TOKEN = "[MASK]"
MODE_TOKENS = {"nlu": "[NLU]", "s2s": "[S2S]", "nlg": "[NLG]"}
USER_DEFINED_SYMBOLS = (MASK_TOKEN, *MODE_TOKENS.values())  # ids 3..6 of trained models
VOCAB_MULTIPLE = 128
MIN_PIECES = 256  # regular pieces, besides specials and the 256 byte-fallback pieces
NUM_BYTES = 256

_tf_lock = threading.Lock()
_tf_configured = False


def import_tf():
    """`import tensorflow`, with every GPU hidden from it (tf.data runs on the host only)."""
    global _tf_configured
    import tensorflow as tf

    with _tf_lock:
        if not _tf_configured:
            try:
                tf.config.set_visible_devices([], "GPU")
            except (RuntimeError, ValueError):  # already initialized, or no GPU support built in
                pass
            _tf_configured = True
    return tf


def round_up(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def sentinel_token(i: int) -> str:
    return f"<extra_id_{i}>"


class Vocabulary(abc.ABC):
    """Token ids <-> text. Subclasses set the layout; the rest is shared."""

    pad_id: int = PAD_ID
    eos_id: int = EOS_ID
    unk_id: int = UNK_ID
    num_sentinels: int = NUM_SENTINELS

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Model vocabulary size (embedding rows), a multiple of 128."""

    @property
    @abc.abstractmethod
    def mask_id(self) -> int:
        """The MLM [MASK] id."""

    @property
    @abc.abstractmethod
    def mode_ids(self) -> dict[str, int]:
        """UL2 mode-token ids: {'nlu': [NLU], 's2s': [S2S], 'nlg': [NLG]}."""

    @property
    @abc.abstractmethod
    def regular_ids(self) -> range:
        """Ids of ordinary text tokens (what MLM's random replacement may draw from)."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without EOS."""

    @abc.abstractmethod
    def _decode_regular(self, ids: list[int], continuation: bool) -> str:
        """Text of a run of regular ids (`continuation`: something was rendered before it)."""

    @property
    def _sentinel_top(self) -> int:
        return self.vocab_size - 1

    def sentinel_id(self, i: int) -> int:
        """T5's `<extra_id_i>`: vocab_size - 1 - i."""
        if not 0 <= i < self.num_sentinels:
            raise ValueError(f"sentinel index {i} not in [0, {self.num_sentinels})")
        return self._sentinel_top - i

    @property
    def sentinel_ids(self) -> tuple[int, ...]:
        """(sentinel_id(0), sentinel_id(1), ...)."""
        return tuple(self.sentinel_id(i) for i in range(self.num_sentinels))

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(
            (
                self.pad_id,
                self.eos_id,
                self.unk_id,
                self.mask_id,
                *self.mode_ids.values(),
                *self.sentinel_ids,
            )
        )

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def _special_names(self) -> dict[int, str]:
        names = {self.mask_id: MASK_TOKEN, self.unk_id: "<unk>"}
        names.update({i: MODE_TOKENS[m] for m, i in self.mode_ids.items()})
        names.update({self.sentinel_id(i): sentinel_token(i) for i in range(self.num_sentinels)})
        return names

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`: pad and eos skipped, sentinels as `<extra_id_N>`, mask / modes by name."""
        names = self._special_names_cached()
        regular = self._regular_set()
        out: list[str] = []
        run: list[int] = []
        for i in (
            np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).reshape(-1).tolist()
        ):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} out of range [0, vocab_size={self.vocab_size})")
            if i in regular:
                run.append(i)
                continue
            if run:
                out.append(self._decode_regular(run, continuation=bool(out)))
                run = []
            if i in (self.pad_id, self.eos_id):
                continue
            out.append(names.get(i, ""))  # unused ids render as nothing
        if run:
            out.append(self._decode_regular(run, continuation=bool(out)))
        return "".join(out)

    def _special_names_cached(self) -> dict[int, str]:
        if "_names" not in self.__dict__:
            self.__dict__["_names"] = self._special_names()
        return self.__dict__["_names"]

    def _regular_set(self) -> range | frozenset[int]:
        return self.regular_ids

    # ---------------------------------------------------------------- TensorFlow (tf.data) ops

    def tf_tokenize_batch(self, texts):
        """[B] tf.string -> tf.RaggedTensor [B, None] int32 (no EOS); usable in `tf.data` map.

        Vectorized: call it on batches of documents, e.g.
        `ds.batch(256).map(vocab.tf_tokenize_batch).unbatch()`.
        """
        tf = import_tf()
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        values, lengths = tf.numpy_function(
            self._np_tokenize_batch, [texts], (tf.int32, tf.int64), stateful=False
        )
        values.set_shape([None])
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(values, lengths, validate=False)

    def _np_tokenize_batch(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        strings = [t.decode("utf-8", errors="replace") for t in texts.reshape(-1).tolist()]
        ids = self.encode_batch(strings)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        values = np.fromiter(
            itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())
        )
        return values, lengths

    def tf_tokenize(self, text):
        """Scalar tf.string -> 1-D int32 Tensor; [B] -> tf.RaggedTensor (as tf_tokenize_batch)."""
        tf = import_tf()
        text = tf.convert_to_tensor(text, dtype=tf.string)
        if text.shape.rank == 1:
            return self.tf_tokenize_batch(text)
        if text.shape.rank != 0:
            raise ValueError(
                f"tf_tokenize takes a scalar or a [B] string tensor, got shape {text.shape}"
            )
        return self.tf_tokenize_batch(tf.reshape(text, [1])).flat_values

    def tf_detokenize(self, ids):
        """Ids [L] -> scalar tf.string; [B, L] (dense or ragged) -> [B] tf.string (as `decode`)."""
        tf = import_tf()

        def decode_rows(values: np.ndarray, splits: np.ndarray) -> np.ndarray:
            rows = [
                self.decode(values[a:b]).encode("utf-8")
                for a, b in zip(splits[:-1], splits[1:], strict=True)
            ]
            return np.array(rows, dtype=object)

        if isinstance(ids, tf.RaggedTensor):
            values, splits = ids.flat_values, ids.row_splits
        else:
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank == 1:
                return self.tf_detokenize(ids[tf.newaxis])[0]
            values = tf.reshape(ids, [-1])
            splits = tf.range(0, tf.size(values, out_type=tf.int64) + 1, tf.shape(ids, tf.int64)[1])
        out = tf.numpy_function(
            decode_rows, [tf.cast(values, tf.int64), splits], tf.string, stateful=False
        )
        out.set_shape([None])
        return out


# --------------------------------------------------------------------------------------------------


class ByteVocabulary(Vocabulary):
    """UTF-8 bytes, ByT5-style, with the shared special layout (see the module docstring)."""

    BYTE_OFFSET = 7

    def __init__(self) -> None:
        self._vocab_size = round_up(self.BYTE_OFFSET + NUM_BYTES + NUM_SENTINELS)  # 384

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def mask_id(self) -> int:
        return 3

    @property
    def mode_ids(self) -> dict[str, int]:
        return {"nlu": 4, "s2s": 5, "nlg": 6}

    @property
    def regular_ids(self) -> range:
        return range(self.BYTE_OFFSET, self.BYTE_OFFSET + NUM_BYTES)

    def encode(self, text: str) -> list[int]:
        return (
            np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + self.BYTE_OFFSET
        ).tolist()

    def _decode_regular(self, ids: list[int], continuation: bool) -> str:
        del continuation
        return bytes(i - self.BYTE_OFFSET for i in ids).decode("utf-8", errors="replace")

    def tf_tokenize_batch(self, texts):
        """[B] tf.string -> tf.RaggedTensor [B, None] int32, in pure TF ops (no Python at all)."""
        tf = import_tf()
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        lengths = tf.strings.length(texts, unit="BYTE")
        flat = tf.io.decode_raw(tf.strings.reduce_join(texts), tf.uint8)
        values = tf.cast(flat, tf.int32) + self.BYTE_OFFSET
        return tf.RaggedTensor.from_row_lengths(values, tf.cast(lengths, tf.int64), validate=False)

    def tf_tokenize(self, text):
        tf = import_tf()
        text = tf.convert_to_tensor(text, dtype=tf.string)
        if text.shape.rank == 0:
            return tf.cast(tf.io.decode_raw(text, tf.uint8), tf.int32) + self.BYTE_OFFSET
        return super().tf_tokenize(text)

    def __repr__(self) -> str:
        return f"ByteVocabulary(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------------


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
        with open(path, "rb") as f:
            proto = f.read()
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
    about `max_chars` characters. The file appears atomically (written under a temporary name).
    """
    import sentencepiece as spm

    _check_vocab_size(
        vocab_size,
        MIN_TRAINED_VOCAB_SIZE,
        f"{_SPECIAL_PIECES} special pieces, {NUM_BYTES} byte pieces, {MIN_PIECES} pieces",
    )
    model_dir = os.fspath(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, (model_name or f"spm_{vocab_size}") + ".model")
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
    _atomic_write(path, model.getvalue())
    logger.info(
        "trained SentencePiece %s on %d documents (%d chars)",
        path,
        stats["documents"],
        stats["chars"],
    )
    return path


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
    return os.path.join(os.fspath(data_dir), "vocab", f"{safe}_{vocab_size}_{digest}.model")


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
    if not os.path.exists(path):
        _check_vocab_size(
            vocab_size,
            MIN_TRAINED_VOCAB_SIZE,
            f"{_SPECIAL_PIECES} special pieces, {NUM_BYTES} byte pieces, {MIN_PIECES} pieces",
        )
        name = os.path.basename(path)[: -len(".model")]
        train_sentencepiece(
            text_iterator_factory(),
            vocab_size=vocab_size,
            model_dir=os.path.dirname(path),
            model_name=name,
            **options,
        )
    else:
        logger.info("reusing SentencePiece model %s", path)
    return SentencePieceVocabulary.load(path, vocab_size=vocab_size)


VOCABULARY_KINDS = ("byte", "sentencepiece", "<path>.model")


def get_vocabulary(kind: str, **kwargs: Any) -> Vocabulary:
    """A vocabulary by kind.

    'byte': `ByteVocabulary()`; 'sentencepiece': `get_or_train_sentencepiece(**kwargs)`; a path
    ending in '.model': `SentencePieceVocabulary.load(path, **kwargs)`.
    """
    kind_str = os.fspath(kind)
    if kind_str == "byte":
        if kwargs:
            raise TypeError(f"ByteVocabulary takes no options, got {sorted(kwargs)}")
        return ByteVocabulary()
    if kind_str == "sentencepiece":
        return get_or_train_sentencepiece(**kwargs)
    if kind_str.endswith(".model"):
        return SentencePieceVocabulary.load(kind_str, **kwargs)
    raise ValueError(
        f"unknown vocabulary kind {kind!r}: valid kinds are {', '.join(VOCABULARY_KINDS)}"
    )
