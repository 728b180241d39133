"""Tests for jaxlm.objectives.lm: causal LM and prefix LM (T5X golden example, uniform split)."""

import numpy as np

from jaxlm import objectives as O

from ._util import EOS, chi2_gof


# ----------------------------------------------------------------------------------------------
# Causal LM


def test_clm_shift_right_and_weights():
    tokens = np.array([5, 6, 7, 8, 0, 0], np.int32)
    out = O.clm(tokens)
    np.testing.assert_array_equal(out["decoder_target_tokens"], tokens)
    np.testing.assert_array_equal(out["decoder_input_tokens"], [0, 5, 6, 7, 8, 0])
    np.testing.assert_array_equal(out["decoder_loss_weights"], [1, 1, 1, 1, 0, 0])
    assert all(v.dtype == np.int32 for v in out.values())

# ----------------------------------------------------------------------------------------------
# Prefix LM


def test_prefix_lm_t5x_golden_example():
    # seqio PrefixLMFeatureConverter docstring: inputs [9, 4, 6, 1], targets [3, 9, 1].
    tokens = np.array([9, 4, 6, 1, 3, 9, 1], np.int32)
    split = lambda s: np.argmax(O.prefix_lm(tokens, seed=s)["decoder_loss_weights"])  # noqa: E731
    seed = next(s for s in range(1000) if split(s) == 4)
    out = O.prefix_lm(tokens, seed=seed)
    np.testing.assert_array_equal(out["decoder_target_tokens"], [9, 4, 6, 1, 3, 9, 1])
    np.testing.assert_array_equal(out["decoder_input_tokens"], [0, 9, 4, 6, 1, 3, 9])
    np.testing.assert_array_equal(out["decoder_loss_weights"], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(out["decoder_causal_attention"], [1, 1, 1, 1, 1, 0, 0])


def test_prefix_lm_split_uniform_and_loss_on_targets_only():
    length = 20
    tokens = np.arange(10, 10 + length, dtype=np.int32)
    pos = np.arange(length)
    splits = []
    for seed in range(3000):
        out = O.prefix_lm(tokens, seed=seed)
        w = out["decoder_loss_weights"]
        s = int(np.argmax(w))
        np.testing.assert_array_equal(w, pos >= s)
        np.testing.assert_array_equal(out["decoder_causal_attention"], pos <= s)
        np.testing.assert_array_equal(out["decoder_target_tokens"], tokens)
        splits.append(s)
    counts = np.bincount(splits, minlength=length)
    assert counts[0] == 0  # the prefix is never empty and never the whole sequence
    uniform = np.full(length - 1, 1 / (length - 1))
    assert chi2_gof(counts[1:], uniform) > 1e-3
    # Power check: a split skewed to the middle would be rejected.
    tri = np.minimum(np.arange(1, length), np.arange(length - 1, 0, -1)).astype(float)
    assert chi2_gof(counts[1:], tri / tri.sum()) < 1e-6


def test_prefix_lm_encoder_decoder():
    tokens = np.arange(10, 60, dtype=np.int32)
    for seed in range(20):
        out = O.prefix_lm_encoder_decoder(tokens, seed=seed)
        enc, tgt = out["encoder_input_tokens"], out["decoder_target_tokens"]
        assert enc[-1] == EOS and tgt[-1] == EOS
        assert enc.size >= 2 and tgt.size >= 2
        np.testing.assert_array_equal(np.r_[enc[:-1], tgt[:-1]], tokens)
        np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, tgt[:-1]])
        np.testing.assert_array_equal(out["decoder_loss_weights"], np.ones(tgt.size))
        # Same split as the decoder-only form for the same seed.
        s = int(np.argmax(O.prefix_lm(tokens, seed=seed)["decoder_loss_weights"]))
        assert enc.size - 1 == s
