"""Tests for jaxlm.data.iterator: exact resumption (mid-document, mid-window, across epochs) and
the skipped-document count."""

import json

import numpy as np
import pytest

from jaxlm.data.tokenizer import ByteVocabulary

from ._util import pipe, same, stream, take, texts


@pytest.mark.parametrize(
    "objective,family,n",
    [("span_corruption", "encoder_decoder", 5), ("ul2", "encoder_decoder", 7)],
)
def test_restore_gives_the_same_next_batches(data_dir, objective, family, n):
    """Resuming mid-document (concat) / mid-window (greedy), windows before it skipped."""
    p = pipe(data_dir, objective, family, window=2)
    it = p.iterator()
    take(it, n)
    state = json.loads(json.dumps(it.get_state()))
    epoch, a, b = state["position"]
    assert b > 0 and (a // 2 if objective == "span_corruption" else a) > 0, state
    reference = take(it, 3)
    resumed = pipe(data_dir, objective, family, window=2).iterator(state)
    for a, b in zip(reference, take(resumed, 3), strict=True):
        assert same(a, b)
    assert resumed.get_state() == it.get_state()
    other = pipe(data_dir, objective, family, window=2, seed=9).iterator()
    with pytest.raises(ValueError, match="different pipeline"):
        other.set_state(state)


@pytest.mark.parametrize(
    "objective,family,packing", [("clm", "decoder", "concat"), ("prefix_lm", "decoder", "greedy")]
)
def test_restore_across_epochs_and_skipped_count(data_dir, objective, family, packing):
    """The tiny dataset: 3 of 10 documents are empty or whitespace; epochs are a few batches."""
    kw = dict(
        dataset="pipeline_test_texts", packing=packing, seq_len=32, window=4, shuffle_buffer=5
    )
    p = pipe(data_dir, objective, family, batch=2, **kw)
    it = p.iterator()
    run = take(it, 12)
    assert it.get_state()["position"][0] >= 1  # into the second epoch at least
    for n in (3, 8):
        again = p.iterator()
        take(again, n)
        state = again.get_state()
        resumed = p.iterator(state)
        for a, b in zip(run[n:], take(resumed, 12 - n), strict=True):
            assert same(a, b)
        assert resumed.stats == it.stats


def test_empty_documents_skipped_and_bytes_kept(data_dir):
    """Whitespace-only documents never reach a batch; undecodable bytes pass through unchanged."""
    p = pipe(
        data_dir,
        "clm",
        batch=2,
        dataset="pipeline_test_texts",
        shuffle_buffer=0,
        seq_len=32,
        window=64,
    )
    it = p.iterator()
    got = np.concatenate([b["decoder_target_tokens"].reshape(-1) for b in take(it, 4)])
    expected = stream(texts(data_dir, "pipeline_test_texts", "train"))
    assert 256 < expected.size < 512 and (0xFF + ByteVocabulary.BYTE_OFFSET) in expected
    np.testing.assert_array_equal(got, expected[: got.size])
    assert it.stats["skipped_documents"] == 3  # the first epoch's one window
    got = np.concatenate([got] + [b["decoder_target_tokens"].reshape(-1) for b in take(it, 4)])
    np.testing.assert_array_equal(got, np.tile(expected, 2)[: got.size])  # epochs concatenate
    assert it.stats["skipped_documents"] == 6
