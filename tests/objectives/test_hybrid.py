"""Tests for jaxlm.objectives.hybrid: the causal fraction, causal examples are CLM, masked
examples attend bidirectionally and predict each masked token at the position before it."""

import numpy as np
import pytest

from jaxlm import objectives as O

from ._util import MASK_ID, SPECIALS

KW = dict(vocab_size=1000, mask_id=MASK_ID, special_ids=SPECIALS)


@pytest.mark.parametrize("fraction", [1 / 16, 0.5])
def test_causal_fraction_matches_its_setting(fraction):
    x = np.arange(10, 40, dtype=np.int32)
    n = 4000
    causal = sum(
        not O.hybrid(x, seed=s, causal_fraction=fraction, **KW)["decoder_causal_attention"].any()
        for s in range(n))
    # 4 standard deviations of a binomial proportion.
    assert abs(causal / n - fraction) < 4 * np.sqrt(fraction * (1 - fraction) / n)


def test_fractions_zero_and_one_give_one_mode():
    x = np.arange(10, 40, dtype=np.int32)
    for s in range(50):
        assert O.hybrid(x, seed=s, causal_fraction=0.0, **KW)["decoder_causal_attention"].all()
        assert not O.hybrid(x, seed=s, causal_fraction=1.0, **KW)["decoder_causal_attention"].any()


def test_causal_examples_are_clm():
    x = np.arange(10, 60, dtype=np.int32)
    seed = next(s for s in range(1000) if O.hybrid_is_causal(s))
    out = O.hybrid(x, seed=seed, **KW)
    for k, v in O.clm(x).items():
        np.testing.assert_array_equal(out[k], v)
    assert not out["decoder_causal_attention"].any()


def test_masked_examples_predict_a_masked_token_at_the_position_before_it():
    x = np.arange(10, 210, dtype=np.int32)
    n_sel = n_mask = 0
    for seed in range(100):
        if O.hybrid_is_causal(seed):
            continue
        out = O.hybrid(x, seed=seed, **KW)
        ref = O.mlm(x, seed=seed, **KW)
        assert out["decoder_causal_attention"].all()  # bidirectional over the whole example
        np.testing.assert_array_equal(out["decoder_target_tokens"], x)  # targets: the text
        # Inputs: the corrupted text shifted right, so position j reads token j - 1 and predicts
        # token j; the loss is on the selected tokens only.
        np.testing.assert_array_equal(out["decoder_input_tokens"],
                                      np.r_[0, ref["encoder_input_tokens"][:-1]])
        np.testing.assert_array_equal(out["decoder_loss_weights"], ref["encoder_loss_weights"])
        w = np.flatnonzero(out["decoder_loss_weights"])
        assert w.size == round(0.15 * x.size)
        # The masked token itself is hidden from the whole (bidirectional) input: where it would
        # appear, at position j + 1, stands the mask id (80% of selections).
        after = w[w + 1 < x.size] + 1
        n_sel += after.size
        n_mask += int((out["decoder_input_tokens"][after] == MASK_ID).sum())
        assert not np.isin(x[w], out["decoder_input_tokens"][after][
            out["decoder_input_tokens"][after] == MASK_ID]).any()
    assert abs(n_mask / n_sel - 0.8) < 0.04


def test_bad_fraction_names_the_argument():
    with pytest.raises(ValueError, match="causal_fraction"):
        O.hybrid(np.arange(5), seed=0, causal_fraction=1.5, **KW)
