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
