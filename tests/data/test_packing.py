"""Tests for jaxlm.data.packing (numpy only): first-fit rows and example seeds."""

import numpy as np

from jaxlm import objectives as O
from jaxlm.data import packing
from jaxlm.data.layout import resolve_layout

from ._util import BYTE


def test_greedy_packing_first_fit_and_seeds():
    layout = resolve_layout("clm", "decoder", 8, BYTE, packing="greedy")
    examples = [O.clm(np.full(n, 10 + i)) for i, n in enumerate((5, 4, 3, 8, 1))]
    rows = packing.assemble_rows(layout, examples, greedy=True)
    # First fit, in order: 5 -> row 0; 4 -> row 1; 3 -> row 0; 8 -> row 2; 1 -> row 1.
    np.testing.assert_array_equal(
        rows["decoder_segment_ids"],
        [[1, 1, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 2, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]],
    )
    np.testing.assert_array_equal(rows["decoder_positions"][0], [0, 1, 2, 3, 4, 0, 1, 2])
    np.testing.assert_array_equal(rows["decoder_target_tokens"][1], [11] * 4 + [14, 0, 0, 0])
    np.testing.assert_array_equal(rows["decoder_input_tokens"][1], [0, 11, 11, 11, 0, 0, 0, 0])
    np.testing.assert_array_equal(rows["decoder_loss_weights"][1], [1] * 5 + [0] * 3)
    s = packing.mix_seeds(0, 0, 0, np.arange(1000), 0)
    assert len(set(s.tolist())) == 1000 and (s >= 0).all()
    assert (packing.mix_seeds(0, 0, 0, np.arange(5), 0) == s[:5]).all()
    assert not (packing.mix_seeds(1, 0, 0, np.arange(5), 0) == s[:5]).any()


def test_concat_batch_forms_equal_the_row_path():
    """chunk_rows on an objective with a batch form (one call per chunk length) makes exactly
    the rows of the per-example path (the objective per chunk, then assemble_rows)."""
    rng = np.random.default_rng(1)
    for objective, family in (("span_corruption", "encoder_decoder"), ("clm", "decoder")):
        layout = resolve_layout(objective, family, 32, BYTE)
        assert layout.batch_objective_fn is not None
        raw = layout.raw_len
        lengths = np.array([raw, raw, 5, raw, 1, raw])  # full chunks and short last ones
        chunks = rng.integers(7, 200, size=(6, raw)).astype(np.int32)
        starts = np.stack([np.zeros(6), np.arange(6) * 3, np.arange(6)], 1).astype(np.int64)
        got = packing.chunk_rows(layout, chunks, lengths, starts, seed=3, process_index=1)
        seeds = packing.mix_seeds(3, 1, starts[:, 0], starts[:, 1], starts[:, 2])
        pieces = [c[:n] for c, n in zip(chunks, lengths, strict=True)]
        want = packing.assemble_rows(
            layout, packing.apply_objective(layout, pieces, seeds), greedy=False
        )
        assert list(got) == list(want) == list(layout.feature_keys)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
            assert got[k].dtype == np.int32
