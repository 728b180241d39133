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


def _stream(rng, n_docs, max_len):
    """Documents of distinct token ranges (doc k: ids 10000 + 1000k ...), each ended by EOS."""
    return np.concatenate([np.r_[10_000 + 1000 * k + np.arange(int(rng.integers(1, max_len))),
                                 EOS] for k in range(n_docs)]).astype(np.int32)


@pytest.mark.parametrize("max_len", [40, 400])  # documents shorter and longer than a chunk
def test_the_batch_offers_only_other_documents_and_whole_ones(max_len):
    from jaxlm.data.packing import chunk_others

    rng = np.random.default_rng(max_len)
    for _ in range(50):
        stream = _stream(rng, 200, max_len)
        chunks = [stream[i:i + 128] for i in range(0, 16 * 128, 128)]  # consecutive, in order
        for i, others in enumerate(chunk_others(chunks)):
            own = (chunks[i][0] - 10_000) // 1000  # the document of the chunk's first token
            for doc in others:
                k = (doc[0] - 10_000) // 1000
                assert k != own and EOS not in doc
                whole = 10_000 + 1000 * k + np.arange(doc.size)
                np.testing.assert_array_equal(doc, whole)  # from the document's start
        if max_len == 40:  # short documents: every chunk but the first starts mid-stream
            assert all(len(o) > 10 for o in chunk_others(chunks))


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


def test_greedy_pieces_offer_the_window_s_other_documents():
    from jaxlm.data.packing import piece_others

    pieces = [np.arange(3), np.arange(3, 5), np.arange(5, 9)]
    others = piece_others(pieces, np.array([0, 0, 1]))
    assert [[p.tolist() for p in o] for o in others] == [[[5, 6, 7, 8]], [[5, 6, 7, 8]],
                                                         [[0, 1, 2], [3, 4]]]


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
    """On the real stream at seq_len 512 (byte tokens, batch 32), where a window of two rows
    often lies inside one document, the rest of the batch supplies the negatives: 50/50 within
    4 sigma (0.40 from the window alone)."""
    from jaxlm import trainer
    from tests.test_trainer import tiny_config

    config = tiny_config(corpus_dir, "nsp", **{"data.seq_len": 512, "train.batch_size": 32,
                                               "data.window": 256})
    _, _, pipeline = trainer.setup(config)
    iterator = pipeline.iterator()
    labels = np.concatenate([next(iterator)["encoder_nsp_labels"][:, 0] for _ in range(40)])
    assert abs(labels.mean() - 0.5) < 4 * np.sqrt(0.25 / labels.size), labels.mean()
