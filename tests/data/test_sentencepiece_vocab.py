"""Tests for jaxlm.data.sentencepiece_vocab: id layouts of trained and foreign models, round
trips, tf.data ops, training and its cache."""

import io
import os
import pickle

import pytest

from jaxlm.data import sentencepiece_vocab as spv
from jaxlm.data import tokenizer as tok

from ._util import SAMPLES, english_texts


# ------------------------------------------------------------------------------ SentencePiece


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("spm")


@pytest.fixture(scope="module")
def sp_vocab(spm_dir):
    path = spv.train_sentencepiece(
        english_texts(), vocab_size=640, model_dir=spm_dir, model_name="t"
    )
    assert os.path.basename(path) == "t.model" and os.path.isfile(path)
    assert not [f for f in os.listdir(spm_dir) if ".tmp" in f]
    return spv.SentencePieceVocabulary.load(path)


def test_sentencepiece_layout(sp_vocab):
    v = sp_vocab
    assert v.vocab_size == 640 and v.num_pieces == 540
    sp = v._sp
    assert [sp.id_to_piece(i) for i in range(7)] == [
        "<pad>",
        "</s>",
        "<unk>",
        "[MASK]",
        "[NLU]",
        "[S2S]",
        "[NLG]",
    ]
    assert (v.pad_id, v.eos_id, v.unk_id, v.mask_id) == (0, 1, 2, 3)
    assert v.mode_ids == {"nlu": 4, "s2s": 5, "nlg": 6}
    assert sp.is_byte(7) and sp.is_byte(262)
    assert v.sentinel_id(0) == 639 and v.sentinel_id(99) == 540 == v.num_pieces
    assert v.regular_ids == range(7, 540)
    assert len(v.special_ids) == 7 + 100


@pytest.mark.parametrize("text", SAMPLES)
def test_sentencepiece_round_trip(sp_vocab, text):
    ids = sp_vocab.encode(text)
    assert all(0 <= i < sp_vocab.num_pieces for i in ids)
    assert sp_vocab.unk_id not in ids  # byte fallback
    assert sp_vocab.decode(ids) == text
    assert sp_vocab.decode([*ids, sp_vocab.eos_id, 0, 0]) == text


def test_sentencepiece_compresses_and_renders_specials(sp_vocab):
    v = sp_vocab
    text = "Return the number of items in the list."
    assert len(v.encode(text)) < len(text) / 2
    # Span corruption cuts a token stream: the text around a sentinel keeps its spaces.
    ids = v.encode("The cat sat on the mat")
    pieces = [v._sp.id_to_piece(i) for i in ids]
    cut = pieces.index("\u2581on")
    corrupted = [*ids[: cut - 1], v.sentinel_id(0), *ids[cut:], v.sentinel_id(1), v.eos_id]
    prefix = v.decode(ids[: cut - 1])
    assert v.decode(corrupted) == prefix + "<extra_id_0> on the mat<extra_id_1>"
    assert (
        v.decode([v.mode_ids["nlg"], *v.encode("Hi")]) == "[NLG] Hi"
    )  # as SentencePiece renders it


def test_sentencepiece_tf_tokenize_batch_equals_encode(sp_vocab, tf):
    v = sp_vocab
    ragged = v.tf_tokenize_batch(tf.constant(SAMPLES))
    assert ragged.dtype == tf.int32
    assert ragged.to_list() == [v.encode(t) for t in SAMPLES]
    assert v.tf_tokenize(tf.constant(SAMPLES[0])).numpy().tolist() == v.encode(SAMPLES[0])
    ds = tf.data.Dataset.from_tensor_slices(SAMPLES).batch(4).map(v.tf_tokenize_batch).unbatch()
    assert [x.tolist() for x in ds.as_numpy_iterator()] == [v.encode(t) for t in SAMPLES]
    # undecodable bytes are replaced, not fatal
    assert v.tf_tokenize(tf.constant(b"a\xffb")).numpy().tolist() == v.encode("a\ufffdb")
    raw = [t.encode() for t in SAMPLES] + [b"a\xffb"]  # encode_bytes: NSP's drawn documents
    from_tf = v.tf_tokenize_batch(tf.constant(raw)).to_list()
    assert [v.encode_bytes(r).tolist() for r in raw] == from_tf
    assert [d.decode() for d in v.tf_detokenize(ragged).numpy().tolist()] == SAMPLES


def test_sentencepiece_pickles(sp_vocab):
    v = pickle.loads(pickle.dumps(sp_vocab))
    assert v.vocab_size == sp_vocab.vocab_size and v.encode(SAMPLES[3]) == sp_vocab.encode(
        SAMPLES[3]
    )


def test_foreign_model_layout(tmp_path):
    """A model made elsewhere (like T5's spiece.model): mask / modes below the sentinels."""
    import sentencepiece as spm

    lines = [line for t in english_texts(150_000) for line in t.split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=300,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    path = tmp_path / "foreign.model"
    path.write_bytes(model.getvalue())
    v = tok.get_vocabulary(str(path))
    assert v.num_pieces == 300 and v.vocab_size == 512  # 300 + 4 + 100 rounded up to 128
    assert v.sentinel_id(0) == 511 and v.sentinel_id(99) == 412
    assert (v.mask_id, v.mode_ids) == (408, {"nlu": 409, "s2s": 410, "nlg": 411})
    assert v.regular_ids == range(3, 300)
    assert (
        v.decode([*v.encode("the end"), v.mask_id, 350, v.sentinel_id(3)])
        == "the end[MASK]<extra_id_3>"
    )
    t5 = spv.SentencePieceVocabulary.load(path, t5_sentinels=True)
    assert t5.vocab_size == 512 and t5.sentinel_id(0) == 399 and t5.sentinel_id(99) == 300
    assert (t5.mask_id, t5.mode_ids["nlg"]) == (400, 403)
    with pytest.raises(ValueError, match="vocab_size"):
        spv.SentencePieceVocabulary.load(path, vocab_size=384)


def test_too_small_or_unaligned_vocab_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=512"):
        spv.train_sentencepiece(["some text"], vocab_size=512, model_dir=tmp_path)
    with pytest.raises(ValueError, match="vocab_size=1000.*multiple of 128"):
        spv.train_sentencepiece(["some text"], vocab_size=1000, model_dir=tmp_path)
    with pytest.raises(ValueError, match="vocab_size=384"):
        spv.get_or_train_sentencepiece("x", lambda: ["text"], vocab_size=384, data_dir=tmp_path)
    assert not os.listdir(tmp_path)


def test_get_or_train_caches(tmp_path):
    calls = []

    def texts():
        calls.append(1)
        return iter(english_texts(200_000))

    v1 = spv.get_or_train_sentencepiece("topics", texts, vocab_size=640, data_dir=tmp_path)
    path = v1.path
    assert path.startswith(str(tmp_path / "vocab" / "topics_640_")) and path.endswith(".model")
    mtime = os.stat(path).st_mtime_ns
    v2 = tok.get_vocabulary(
        "sentencepiece",
        dataset_name="topics",
        text_iterator_factory=texts,
        vocab_size=640,
        data_dir=tmp_path,
    )
    assert len(calls) == 1 and os.stat(path).st_mtime_ns == mtime  # reused, not retrained
    assert v2.path == path and v2.encode(SAMPLES[0]) == v1.encode(SAMPLES[0])
    assert os.listdir(tmp_path / "vocab") == [os.path.basename(path)]  # no temp files left
    # different settings -> a different cache entry
    other = spv.sentencepiece_cache_path("topics", vocab_size=640, data_dir=tmp_path, max_chars=10)
    assert other != path
