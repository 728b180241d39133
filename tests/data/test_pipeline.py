"""Tests for jaxlm.data.pipeline: features per objective, determinism, per-host split, no lost
tokens, eval batches, errors, global arrays. Byte vocabulary, seq_len 64, small batches.
"""

import numpy as np
import pytest

from jaxlm import objectives as O
from jaxlm.data import packing
from jaxlm.data.pipeline import DataConfig, Pipeline, make_dataset, to_global_arrays

from ._util import BYTE, SEQ, TINY_VALIDATION, is_empty, pipe, same, stream, take, texts

# ----------------------------------------------------------------------------------------------
# Features, shapes, dtypes per objective and family

CASES = {
    ("clm", "decoder"): ({"decoder": SEQ}, False),
    ("prefix_lm", "decoder"): ({"decoder": SEQ}, True),
    ("mlm", "encoder"): ({"encoder": SEQ}, False),
    ("span_corruption", "encoder_decoder"): ({"encoder": SEQ, "decoder": 14}, False),
    ("prefix_lm", "encoder_decoder"): ({"encoder": SEQ, "decoder": SEQ}, True),
    ("mlm", "encoder_decoder"): ({"encoder": SEQ, "decoder": SEQ}, False),
    ("ul2", "encoder_decoder"): ({"encoder": SEQ, "decoder": SEQ}, True),
}


@pytest.mark.parametrize("objective,family", list(CASES))
def test_batch_features(data_dir, objective, family):
    lengths, packed = CASES[(objective, family)]
    p = pipe(data_dir, objective, family)
    name = f"{objective}_encoder_decoder" if (
        family == "encoder_decoder" and objective in ("prefix_lm", "mlm")) else objective
    expected = set(O.OUTPUT_KEYS[name])
    if packed:
        expected |= {f"{s}_{f}" for s in lengths for f in ("segment_ids", "positions")}
    assert p.layout.lengths == lengths
    it = p.iterator()
    for batch in take(it, 2):
        assert set(batch) == expected
        for k, v in batch.items():
            assert v.dtype == np.int32 and v.shape == (4, lengths[k.split("_")[0]]), (k, v.shape)
        for s in lengths:
            tokens = batch["encoder_input_tokens" if s == "encoder" else "decoder_target_tokens"]
            assert (tokens.min() >= 0) and tokens.max() < BYTE.vocab_size
            if packed:  # segments: 1, 2, ... then padding 0; positions restart per segment
                seg, pos = batch[f"{s}_segment_ids"], batch[f"{s}_positions"]
                assert ((tokens != 0) == (seg > 0)).all()
                for r in range(4):
                    ids = seg[r][seg[r] > 0]
                    assert (np.diff(ids) >= 0).all() and ids[0] == 1
                    starts = np.flatnonzero(np.diff(np.concatenate([[0], seg[r]])) != 0)
                    for a in starts:
                        if seg[r, a]:
                            assert pos[r, a] == 0
        if "decoder_target_tokens" in batch:  # T5X: inputs are the targets shifted right,
            t, i = batch["decoder_target_tokens"], batch["decoder_input_tokens"]  # per segment
            seg = batch.get("decoder_segment_ids", (t != 0).astype(np.int32))
            new = np.concatenate([np.ones((4, 1), bool), seg[:, 1:] != seg[:, :-1]], axis=1)
            assert (i[new & (seg > 0)] == 0).all()
            inner = ~new[:, 1:] & (seg[:, 1:] > 0)
            assert (i[:, 1:][inner] == t[:, :-1][inner]).all()
            assert (i[seg == 0] == 0).all()
    del it


def test_clm_fully_packed_and_span_corruption_lengths(data_dir):
    b = next(pipe(data_dir, "clm").iterator())
    assert (b["decoder_target_tokens"] != 0).all() and (b["decoder_loss_weights"] == 1).all()
    assert (b["decoder_input_tokens"][:, 1:] == b["decoder_target_tokens"][:, :-1]).all()
    raw, targets = O.span_corruption_lengths(SEQ)
    b = next(pipe(data_dir, "span_corruption", "encoder_decoder").iterator())
    enc, dec = b["encoder_input_tokens"], b["decoder_target_tokens"]
    assert enc.shape == (4, SEQ) and (enc != 0).all() and (enc[:, -1] == O.EOS_ID).all()
    assert dec.shape == (4, targets) and (dec != 0).all() and (dec[:, -1] == O.EOS_ID).all()
    assert (dec[:, 0] == BYTE.sentinel_id(0)).all()  # targets start with a sentinel
    assert (enc[:, -2] >= BYTE.vocab_size - O.NUM_SENTINELS).all()  # inputs end with one


def test_ul2_mode_tokens_and_mlm_masks(data_dir):
    b = next(pipe(data_dir, "ul2", "encoder_decoder").iterator())
    firsts = b["encoder_input_tokens"][
        (b["encoder_positions"] == 0) & (b["encoder_segment_ids"] > 0)
    ]
    assert set(firsts.tolist()) <= set(BYTE.mode_ids.values())
    b = next(pipe(data_dir, "mlm", "encoder").iterator())
    w = b["encoder_loss_weights"]
    assert (b["encoder_input_tokens"] != 0).all()  # concat: fully packed
    assert 0.12 < w.sum() / w.size < 0.18
    assert (b["encoder_target_tokens"][w == 0] == b["encoder_input_tokens"][w == 0]).all()


# ----------------------------------------------------------------------------------------------
# Determinism, no lost tokens


def test_same_seed_same_batches_different_seed_different(data_dir):
    for objective, family in (("mlm", "encoder"), ("prefix_lm", "decoder")):
        a = take(pipe(data_dir, objective, family, seed=3).iterator(), 3)
        b = take(pipe(data_dir, objective, family, seed=3).iterator(), 3)
        c = take(pipe(data_dir, objective, family, seed=4).iterator(), 3)
        assert all(same(x, y) for x, y in zip(a, b, strict=True))
        assert not any(same(x, y) for x, y in zip(a, c, strict=True))


def test_concat_loses_no_token(data_dir):
    """Unshuffled CLM targets are the document stream (+ EOS each); span corruption's inputs and
    targets put back together are the same stream, chunk by chunk."""
    expected = stream(texts(data_dir, "stdlib_docs", "train"))
    p = pipe(data_dir, "clm", shuffle_buffer=0)
    got = np.concatenate([b["decoder_target_tokens"].reshape(-1) for b in take(p.iterator(), 6)])
    np.testing.assert_array_equal(got, expected[: got.size])

    p = pipe(data_dir, "span_corruption", "encoder_decoder", shuffle_buffer=0)
    raw, _ = O.span_corruption_lengths(SEQ)
    chunks = []
    for b in take(p.iterator(), 2):
        for enc, dec in zip(b["encoder_input_tokens"], b["decoder_target_tokens"], strict=True):
            spans = {}
            for t in dec[:-1]:
                if t >= BYTE.vocab_size - O.NUM_SENTINELS:
                    spans[t] = cur = []
                else:
                    cur.append(t)
            chunks += [x for t in enc[:-1] for x in (spans[t] if t in spans else [t])]
    np.testing.assert_array_equal(chunks, expected[: 8 * raw])


# ----------------------------------------------------------------------------------------------
# Per-host split


def test_two_processes_disjoint_and_cover(data_dir):
    cfg = DataConfig(data_dir=data_dir, seq_len=SEQ, packing="none", window=64)
    all_docs = [t for t in texts(data_dir, "stdlib_docs", "validation") if not is_empty(t)]
    per_process = []
    for index in (0, 1):
        p = Pipeline(
            cfg,
            objective="clm",
            family="decoder",
            global_batch_size=8,
            process_index=index,
            process_count=2,
        )
        docs, cur = [], []
        for b in p.eval_batches():  # one unshuffled pass; 'none': one document piece per row
            for row, seg in zip(b["decoder_target_tokens"], b["decoder_segment_ids"], strict=True):
                cur += row[seg > 0].tolist()
                if cur and cur[-1] == O.EOS_ID:
                    docs.append(bytes(t - BYTE.BYTE_OFFSET for t in cur[:-1]))
                    cur = []
        assert cur == []
        per_process.append(docs)
        # The train split too, at the document level.
        train = list(p.documents("train").as_numpy_iterator())
        per_process.append(train)
    val0, train0, val1, train1 = per_process
    assert not set(val0) & set(val1) and sorted(val0 + val1) == sorted(all_docs)
    assert len(train0) + len(train1) == len(texts(data_dir, "stdlib_docs", "train"))
    assert not set(train0) & set(train1)
    assert max(len(d) for d in val0 + val1) > 3 * SEQ  # long documents came back whole


# ----------------------------------------------------------------------------------------------
# Eval


def test_eval_concat_keeps_the_remainder_and_examples_match_the_objective(data_dir):
    kw = dict(dataset="pipeline_test_texts", seq_len=32)
    batches = list(pipe(data_dir, "clm", batch=2, **kw).eval_batches())
    got = np.concatenate([b["decoder_target_tokens"].reshape(-1) for b in batches])
    expected = stream(texts(data_dir, "pipeline_test_texts", "validation"))
    assert got.size == 64 and 32 < expected.size < 64  # a full chunk, the padded remainder
    np.testing.assert_array_equal(got[got != 0], expected)

    # 'none': row k is the objective on document k (+ EOS) with the documented seed.
    p = pipe(data_dir, "mlm", "encoder", batch=4, packing="none", **kw)
    rows = next(p.eval_batches())
    fn = O.get_objective("mlm", **p.layout.kwargs)
    docs = texts(data_dir, "pipeline_test_texts", "validation")
    k = 0
    for d, text in enumerate(docs):
        if is_empty(text):
            continue
        tokens = np.array([b + 7 for b in text] + [O.EOS_ID], np.int32)
        want = fn(tokens, int(packing.mix_seeds(0, 0, 0, d, 0)))
        for key, value in want.items():
            np.testing.assert_array_equal(rows[key][k, : tokens.size], value)
            assert not rows[key][k, tokens.size :].any()
        k += 1
    assert k == 3


def test_eval_batches_fixed_count_padding_and_seed_independent(data_dir):
    kw = dict(dataset="pipeline_test_texts", seq_len=32, packing="greedy")
    a = list(pipe(data_dir, "mlm", "encoder", batch=2, seed=1, **kw).eval_batches(num_batches=5))
    b = list(pipe(data_dir, "mlm", "encoder", batch=2, seed=2, **kw).eval_batches(num_batches=5))
    assert len(a) == 5 and all(same(x, y) for x, y in zip(a, b, strict=True))
    assert all(x["encoder_input_tokens"].shape == (2, 32) for x in a)
    assert not a[-1]["encoder_input_tokens"].any()  # 3 documents: the rest is all-zero padding
    n_docs = sum(int(x["encoder_segment_ids"].max(axis=1).sum()) for x in a)
    assert n_docs == sum(not is_empty(t) for t in TINY_VALIDATION)


# ----------------------------------------------------------------------------------------------
# Errors


def test_errors(data_dir, tmp_path, no_network):

    def make(**kw):
        base = dict(
            objective="clm", family="decoder", global_batch_size=4, process_index=0, process_count=1
        )
        config = {"data_dir": data_dir, "seq_len": SEQ, **kw.pop("data", {})}
        return Pipeline(DataConfig(**config), **{**base, **kw})

    with pytest.raises(ValueError, match="unknown dataset.*no_such_dataset"):
        make(data={"dataset": "no_such_dataset"})
    with pytest.raises(ValueError, match=r"not prepared in data_dir.*tfds build tiny_shakespeare"):
        make(data={"dataset": "tiny_shakespeare", "data_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"'content'.*features are \['id', 'text', 'title'\]"):
        make(data={"dataset": "pipeline_test_texts", "text_feature": "content"})
    with pytest.raises(ValueError, match="'id'.*not a text feature"):
        make(data={"dataset": "pipeline_test_texts", "text_feature": "id"})
    with pytest.raises(ValueError, match="global batch size 3 is not divisible .* 2"):
        make(global_batch_size=3, process_index=1, process_count=2)
    with pytest.raises(ValueError, match="'span_corruption' needs the model family 'encoder_dec"):
        make(objective="span_corruption")
    with pytest.raises(ValueError, match="'mlm' needs the model family 'encoder' or"):
        make(objective="mlm", family="decoder")
    with pytest.raises(ValueError, match="packing"):
        make(data={"packing": "zip"})
    with pytest.raises(ValueError, match="data.windows is not a data option"):
        DataConfig.coerce({"windows": 3})


# ----------------------------------------------------------------------------------------------
# Global arrays


def test_to_global_arrays_on_the_8_device_mesh(data_dir):
    from jax.sharding import PartitionSpec

    from jaxlm.sharding import make_mesh

    mesh = make_mesh(data=-1, fsdp=2)
    ds = make_dataset(
        DataConfig(data_dir=data_dir, seq_len=SEQ),
        objective="clm",
        family="decoder",
        global_batch_size=8,
        process_index=0,
        process_count=1,
    )
    local = next(ds.as_numpy_iterator())
    arrays = to_global_arrays(local, mesh)
    for k, a in arrays.items():
        assert a.shape == (8, SEQ) and a.sharding.spec == PartitionSpec(("data", "fsdp"), None)
        assert len(a.addressable_shards) == 8
        assert all(s.data.shape == (1, SEQ) for s in a.addressable_shards)
        np.testing.assert_array_equal(np.asarray(a), local[k])
    with pytest.raises(ValueError, match="not divisible"):
        to_global_arrays({"x": np.zeros((6, SEQ), np.int32)}, mesh)


def test_dataset_by_name_from_its_prepared_folder(data_dir, tmp_path):
    """A text_files config is not in the code's registry: it is read from its folder."""
    from jaxlm.data.text_files import text_files_builder

    (tmp_path / "notes.txt").write_text("\n\n".join(f"paragraph number {i}." for i in range(40)))
    text_files_builder(str(tmp_path / "notes.txt"), data_dir=data_dir, name="mine")
    p = pipe(data_dir, "clm", batch=2, dataset="text_files/mine", seq_len=32, shuffle_buffer=0)
    text = BYTE.decode(next(p.iterator())["decoder_target_tokens"].reshape(-1))
    assert text.startswith("paragraph number ")
