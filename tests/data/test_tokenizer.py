"""Tests for jaxlm.data.tokenizer: the byte vocabulary's id layout, round trips, tf.data ops, and
vocabularies by kind."""

import numpy as np
import pytest

from jaxlm.data import tokenizer as tok

from ._util import SAMPLES


# ------------------------------------------------------------------------------------ bytes


def test_byte_layout():
    v = tok.ByteVocabulary()
    assert v.vocab_size == 384 and v.vocab_size % 128 == 0
    assert (v.pad_id, v.eos_id, v.unk_id, v.mask_id) == (0, 1, 2, 3)
    assert v.mode_ids == {"nlu": 4, "s2s": 5, "nlg": 6}
    assert v.encode("\x00") == [7] and v.encode("\xff") == [7 + 0xC3, 7 + 0xBF]
    assert v.regular_ids == range(7, 263)
    assert v.sentinel_id(0) == 383 and v.sentinel_id(99) == 284
    assert v.sentinel_ids == tuple(range(383, 283, -1))
    assert v.special_ids == frozenset({0, 1, 2, 3, 4, 5, 6, *range(284, 384)})
    assert not v.special_ids & set(v.regular_ids)
    with pytest.raises(ValueError):
        v.sentinel_id(100)


@pytest.mark.parametrize("text", SAMPLES)
def test_byte_round_trip(text):
    v = tok.ByteVocabulary()
    ids = v.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert all(7 <= i < 263 for i in ids)
    assert v.decode(ids) == text
    assert v.decode([0, *ids, 1, 0, 0]) == text  # pad and eos are skipped


def test_byte_decode_invalid_utf8_and_specials():
    v = tok.ByteVocabulary()
    bad = [7 + b for b in b"ok \xff\xfe end \xe4\xb8"]  # invalid and truncated UTF-8
    assert v.decode(bad) == "ok \ufffd\ufffd end \ufffd"
    ids = [
        *v.encode("a"),
        v.sentinel_id(0),
        *v.encode("b"),
        v.sentinel_id(12),
        v.mask_id,
        v.mode_ids["s2s"],
        v.eos_id,
    ]
    assert v.decode(ids) == "a<extra_id_0>b<extra_id_12>[MASK][S2S]"
    assert v.decode(np.array(ids, dtype=np.int32)) == v.decode(ids)
    with pytest.raises(ValueError, match="out of range"):
        v.decode([v.vocab_size])


def test_byte_tf_tokenize_batch_equals_encode(tf):
    v = tok.ByteVocabulary()
    ragged = v.tf_tokenize_batch(tf.constant(SAMPLES))
    assert ragged.dtype == tf.int32
    assert ragged.to_list() == [v.encode(t) for t in SAMPLES]
    assert v.tf_tokenize(tf.constant(SAMPLES[3])).numpy().tolist() == v.encode(SAMPLES[3])
    # invalid UTF-8 inside TF: raw bytes map to byte ids, never an error
    assert v.tf_tokenize(tf.constant(b"a\xffb")).numpy().tolist() == [7 + 97, 7 + 255, 7 + 98]
    # inside tf.data, batched then unbatched
    ds = tf.data.Dataset.from_tensor_slices(SAMPLES).batch(4).map(v.tf_tokenize_batch).unbatch()
    assert [x.tolist() for x in ds.as_numpy_iterator()] == [v.encode(t) for t in SAMPLES]
    detok = v.tf_detokenize(ragged).numpy().tolist()
    assert [d.decode("utf-8") for d in detok] == SAMPLES
    # encode_bytes (NSP's drawn documents) gives what tf.data gives, raw bytes included
    raw = [t.encode() for t in SAMPLES] + [b"a\xffb"]
    from_tf = v.tf_tokenize_batch(tf.constant(raw)).to_list()
    assert [v.encode_bytes(r).tolist() for r in raw] == from_tf


def test_get_vocabulary_kinds():
    assert isinstance(tok.get_vocabulary("byte"), tok.ByteVocabulary)
    with pytest.raises(ValueError, match="byte.*sentencepiece"):
        tok.get_vocabulary("wordpiece")
