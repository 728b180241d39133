"""Vocabularies: byte-level and SentencePiece, with the T5 special-id layout and UL2 mode tokens.

Every vocabulary has pad 0, eos 1, unk 2, a [MASK] id, the UL2 mode ids [NLU] [S2S] [NLG], and 100
span-corruption sentinels at the top: `sentinel_id(i) = vocab_size - 1 - i` is T5's `<extra_id_i>`.
`vocab_size` is the model's vocabulary (embedding rows), always a multiple of 128.

ByteVocabulary (no training):
    0 pad, 1 eos, 2 unk, 3 [MASK], 4 [NLU], 5 [S2S], 6 [NLG], 7..262 the bytes 0..255,
    263 [CLS], 264 [SEP] (next-sentence prediction), 265..283 unused, 284..383 sentinels
    (<extra_id_99> .. <extra_id_0>); vocab_size 384. Other vocabularies use their two lowest
    sentinels as [CLS] / [SEP] (an encoder-only objective has no use for them as sentinels).

SentencePieceVocabulary (sentencepiece_vocab.py), trained by `train_sentencepiece` /
`get_or_train_sentencepiece`:
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

The SentencePiece vocabulary, its training and its cache live in sentencepiece_vocab.py.
TensorFlow is imported lazily (only the tf_* methods need it), from `tfcompat.import_tf`.
"""

from __future__ import annotations

import abc
import itertools
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jaxlm.conventions import EOS_ID, NUM_SENTINELS, PAD_ID, UNK_ID
from jaxlm.data.tfcompat import import_tf

MASK_TOKEN = "[MASK]"
MODE_TOKENS = {"nlu": "[NLU]", "s2s": "[S2S]", "nlg": "[NLG]"}
USER_DEFINED_SYMBOLS = (MASK_TOKEN, *MODE_TOKENS.values())  # ids 3..6 of trained models
VOCAB_MULTIPLE = 128
MIN_PIECES = 256  # regular pieces, besides specials and the 256 byte-fallback pieces
NUM_BYTES = 256


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
    def cls_id(self) -> int:
        """BERT's [CLS] (next-sentence prediction): by default the lowest sentinel, which an
        encoder-only objective never uses as a sentinel."""
        return self.sentinel_id(self.num_sentinels - 1)

    @property
    def sep_id(self) -> int:
        """BERT's [SEP]: by default the second-lowest sentinel (see cls_id)."""
        return self.sentinel_id(self.num_sentinels - 2)

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

    def encode_bytes(self, raw: bytes) -> np.ndarray:
        """int32 ids of one raw (UTF-8) document, exactly as `tf_tokenize_batch` gives them."""
        return np.asarray(self.encode(raw.decode("utf-8", errors="replace")), dtype=np.int32)

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

    @property
    def cls_id(self) -> int:
        return self.BYTE_OFFSET + NUM_BYTES  # 263, the first unused id

    @property
    def sep_id(self) -> int:
        return self.BYTE_OFFSET + NUM_BYTES + 1  # 264

    def encode(self, text: str) -> list[int]:
        return (
            np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + self.BYTE_OFFSET
        ).tolist()

    def _decode_regular(self, ids: list[int], continuation: bool) -> str:
        del continuation
        return bytes(i - self.BYTE_OFFSET for i in ids).decode("utf-8", errors="replace")

    def encode_bytes(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int32) + self.BYTE_OFFSET

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


VOCABULARY_KINDS = ("byte", "sentencepiece", "<path>.model")


def get_vocabulary(kind: str, **kwargs: Any) -> Vocabulary:
    """A vocabulary by kind.

    'byte': `ByteVocabulary()`; 'sentencepiece': `get_or_train_sentencepiece(**kwargs)`; a path
    ending in '.model': `SentencePieceVocabulary.load(path, **kwargs)`.
    """
    from jaxlm.data import sentencepiece_vocab as spv  # it builds on this module

    kind_str = os.fspath(kind)
    if kind_str == "byte":
        if kwargs:
            raise TypeError(f"ByteVocabulary takes no options, got {sorted(kwargs)}")
        return ByteVocabulary()
    if kind_str == "sentencepiece":
        return spv.get_or_train_sentencepiece(**kwargs)
    if kind_str.endswith(".model"):
        return spv.SentencePieceVocabulary.load(kind_str, **kwargs)
    raise ValueError(
        f"unknown vocabulary kind {kind!r}: valid kinds are {', '.join(VOCABULARY_KINDS)}"
    )
