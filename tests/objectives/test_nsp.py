"""Tests for jaxlm.objectives.nsp: the pair layout, 50/50 labels, negatives from other documents,
and the model / loss / config pieces next-sentence prediction needs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import objectives as O
from jaxlm.data.tokenizer import ByteVocabulary

from ._util import EOS, MASK_ID, SPECIALS

CLS, SEP = 8, 9
KW = dict(vocab_size=2000, mask_id=MASK_ID, cls_id=CLS, sep_id=SEP, special_ids=SPECIALS)


def _window(rng, n_docs=4, length=128):
    """Documents of distinct token ranges (doc k: ids 100k + 10 ...), EOS after each."""
    parts = []
    for k in range(n_docs):
        parts += [100 * k + 10 + np.arange(int(rng.integers(5, 60))), [EOS]]
    return np.concatenate(parts)[:length].astype(np.int32)


def test_labels_are_50_50_and_negatives_come_from_other_documents():
    rng = np.random.default_rng(0)
    n, positives = 4000, 0
    for seed in range(n):
        x = _window(rng)
        first = O.documents(x)[0]
        a, b, label, drawn = O.nsp_pair(x, seed=seed)
        assert drawn and a.size >= 1 and b.size >= 1 and a.size + b.size <= x.size // 2 - 3
        np.testing.assert_array_equal(a, first[:a.size])  # A: the start of the first document
        if label == 1:  # B: what follows A in its document
            np.testing.assert_array_equal(b, first[a.size:a.size + b.size])
            positives += 1
        else:  # B: a piece of another document
            assert np.all(b // 100 == b[0] // 100) and b[0] // 100 != a[0] // 100
    assert abs(positives / n - 0.5) < 4 * np.sqrt(0.25 / n)


def test_a_one_document_window_gives_true_pairs():
    x = np.arange(10, 138, dtype=np.int32)
    drawn = [O.nsp_pair(x, seed=s) for s in range(200)]
    assert all(label == 1 for _, _, label, _ in drawn)
    assert 60 < sum(not d for *_, d in drawn) < 140  # the NotNext draws it could not honour


def test_negatives_from_the_batch_come_from_other_documents():
    rng = np.random.default_rng(3)
    x = 10 + np.arange(128, dtype=np.int32)  # a window inside one document
    others = [100 * k + 10 + np.arange(int(rng.integers(5, 60)), dtype=np.int32)
              for k in range(1, 5)]
    labels = []
    for seed in range(2000):
        a, b, label, drawn = O.nsp_pair(x, seed=seed, others=others)
        assert drawn
        if label == 0:
            assert b[0] // 100 in range(1, 5) and np.all(b // 100 == b[0] // 100)
        labels.append(label)
    assert abs(np.mean(labels) - 0.5) < 4 * np.sqrt(0.25 / len(labels))


class _Texts:
    """A `records.Documents` stand-in: the documents of a split by index."""

    def __init__(self, texts):
        self.texts = [t.encode() for t in texts]

    def __len__(self):
        return len(self.texts)

    def read(self, indices):
        out = np.empty(len(indices), object)
        out[:] = [self.texts[int(i)] for i in indices]
        return out


def _drawn(others, seed, own):
    drawn = others.draw(seed, own)
    return ByteVocabulary().decode(drawn[0]) if drawn else None


def test_drawn_documents_are_uniform_over_the_others_and_fixed_by_the_seed():
    from jaxlm.data.negatives import OtherDocuments

    texts = [f"document {k}" for k in range(20)]
    texts[5] = " \n\t"  # whitespace only: the pipeline skips it, so it is never drawn
    others = OtherDocuments(_Texts(texts), ByteVocabulary(), block=0, seed=0)
    n = 4000
    counts = {}
    for seed in range(n):
        text = _drawn(others, seed, [3])
        counts[text] = counts.get(text, 0) + 1
    assert set(counts) == {t for k, t in enumerate(texts) if k not in (3, 5)}
    expected = n / 18
    assert all(abs(c - expected) < 4 * np.sqrt(expected) for c in counts.values()), counts
    again = OtherDocuments(_Texts(texts), ByteVocabulary(), block=0, seed=0)  # a fresh cache
    assert [_drawn(others, s, [3]) for s in range(50)] == [_drawn(again, s, [3]) for s in range(50)]


def test_a_chunk_starting_at_an_eos_excludes_the_next_document_too():
    """A chunk's own document is found in the epoch's shuffled order; a chunk whose first token
    is the EOS ending document d has A in the next document with tokens (whitespace-only ones
    between are skipped, as the pipeline skips them): neither may be drawn."""
    from jaxlm.data.negatives import OtherDocuments
    from jaxlm.data.records import epoch_indices

    texts = ["aaaa", "   ", "bbbb", "cccc", "dddd"]
    vocab = ByteVocabulary()
    tokens, eos = vocab.encode_bytes(b"aaaa"), np.array([vocab.eos_id], np.int32)
    seeds = np.arange(300)

    def drawn(others, chunk, start):
        out = others.for_chunks([chunk] * seeds.size, [start] * seeds.size, seeds, EOS)
        return {vocab.decode(o[0]) for o in out}

    block, seed, epoch = 5, 0, 2  # a shuffled order: the record of (epoch, d) is not d
    order = epoch_indices(0, 5, num=5, block=block, seed=seed, epoch=epoch)
    assert order[0] != 0 and order[3] == 0
    d = int(np.flatnonzero(order == 0)[0])  # where "aaaa" stands in this epoch
    shuffled = OtherDocuments(_Texts(texts), vocab, block=block, seed=seed)
    assert drawn(shuffled, np.r_[tokens[2:], eos], [epoch, d, 2]) == {"bbbb", "cccc", "dddd"}
    in_order = OtherDocuments(_Texts(texts), vocab, block=0, seed=0)
    assert drawn(in_order, np.r_[tokens[2:], eos], [0, 0, 2]) == {"bbbb", "cccc", "dddd"}
    assert drawn(in_order, np.r_[eos, vocab.encode_bytes(b"bbbb")], [0, 0, 4]) == {"cccc", "dddd"}


def test_a_split_of_one_document_draws_nothing():
    from jaxlm.data.negatives import OtherDocuments

    others = OtherDocuments(_Texts(["only", "  "]), ByteVocabulary(), block=0, seed=0)
    assert others.draw(0, [0]) == []


def test_the_pipeline_needs_the_split_by_index(corpus_dir):
    from jaxlm.data.pipeline import Pipeline
    from jaxlm.data.sources import DataConfig

    class TFRecordOnly(Pipeline):
        def records(self, split):
            return None

    p = TFRecordOnly(DataConfig(data_dir=corpus_dir, seq_len=64), objective="nsp",
                     family="encoder", global_batch_size=2, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="add_array_record_files"):
        p.dataset()


def test_features_lay_out_cls_a_sep_b_sep():
    rng = np.random.default_rng(1)
    for seed in range(200):
        x = _window(rng)
        out = O.nsp(x, seed=seed, **KW)
        a, b, label, _ = O.nsp_pair(x, seed=seed)
        target = out["encoder_target_tokens"]
        np.testing.assert_array_equal(target, np.r_[CLS, a, SEP, b, SEP])
        assert target.size <= x.size // 2
        np.testing.assert_array_equal(out["encoder_token_types"],
                                      np.r_[np.zeros(a.size + 2), np.ones(b.size + 1)])
        np.testing.assert_array_equal(out["encoder_nsp_weights"], np.eye(1, target.size)[0])
        assert out["encoder_nsp_labels"][0] == label and not out["encoder_nsp_labels"][1:].any()
        w = out["encoder_loss_weights"].astype(bool)
        assert not w[np.isin(target, [CLS, SEP])].any()  # [CLS] / [SEP] are never masked
        assert w.sum() == round(0.15 * (a.size + b.size))
        assert all(v.dtype == np.int32 for v in out.values())


def test_vocabularies_reserve_cls_and_sep():
    byte = ByteVocabulary()
    assert (byte.cls_id, byte.sep_id) == (263, 264)
    assert {byte.cls_id, byte.sep_id}.isdisjoint(byte.regular_ids)
    kw = O.objective_vocab_kwargs("nsp", byte)
    assert (kw["cls_id"], kw["sep_id"], kw["mask_id"]) == (263, 264, 3)
    with pytest.raises(ValueError, match="cls_id"):
        O.nsp(np.arange(10, 40), seed=0, **{**KW, "cls_id": MASK_ID})


def test_config_gives_the_encoder_token_types_and_a_two_way_classifier():
    from jaxlm import config as config_lib

    config = config_lib.get_config()
    config.objective = "nsp"
    model = config_lib.resolve(config).model
    assert (model.family, model.num_token_types, model.classifier_classes) == ("encoder", 2, 2)
    config.model.family = "decoder"
    config.objective = "clm"
    config.model.classifier_classes = 2
    with pytest.raises(config_lib.ConfigError, match="model.classifier_classes"):
        config_lib.resolve(config)


def test_the_classifier_head_and_the_nsp_loss_terms():
    from jaxlm.losses import nsp_loss_scale, nsp_sums
    from jaxlm.models import build_model, init_params
    from jaxlm.models.config import model_config_from
    from jaxlm.models.transformer import classifier_logits

    cfg = model_config_from(dict(preset="tiny", family="encoder", vocab_size=2000,
                                 num_token_types=2, classifier_classes=2))
    model = build_model(cfg)
    rng = np.random.default_rng(2)
    rows = [O.nsp(_window(rng, length=64), seed=s, **KW) for s in range(4)]
    batch = {k: jnp.asarray(np.stack([np.pad(r[k], (0, 32 - r[k].size)) for r in rows]))
             for k in rows[0]}
    params = init_params(model, jax.random.key(0), batch)
    hidden = model.apply({"params": params}, batch, return_hidden=True)
    logits = model.apply({"params": params}, hidden, method=classifier_logits)
    assert logits.shape == (4, 32, 2) and logits.dtype == jnp.float32
    sums = nsp_sums(logits, batch)
    assert float(sums["nsp_weight_sum"]) == 4  # one label per example, read at its [CLS]
    log_p = jax.nn.log_softmax(logits[:, 0])
    want = -jnp.take_along_axis(log_p, batch["encoder_nsp_labels"][:, :1], axis=1).sum()
    np.testing.assert_allclose(float(sums["nsp_loss_sum"]), float(want), rtol=1e-5)
    scale = float(nsp_loss_scale(batch))
    assert scale == pytest.approx(float(batch["encoder_loss_weights"].sum()) / 4)


def test_the_pipeline_gives_half_negatives_on_the_offline_corpus(corpus_dir):
    """On the real stream at seq_len 128 (byte tokens, batch 32), where a window of two rows
    often lies inside one document, every NotNext draw finds another document: 50/50 within
    4 sigma (0.27 from the window alone, 0.40-0.44 with the rest of its batch)."""
    from jaxlm import trainer
    from tests.test_trainer import tiny_config

    config = tiny_config(corpus_dir, "nsp", **{"data.seq_len": 128, "train.batch_size": 32})
    _, _, pipeline = trainer.setup(config)
    iterator = pipeline.iterator()
    labels = np.concatenate([next(iterator)["encoder_nsp_labels"][:, 0] for _ in range(40)])
    assert abs(labels.mean() - 0.5) < 4 * np.sqrt(0.25 / labels.size), labels.mean()
