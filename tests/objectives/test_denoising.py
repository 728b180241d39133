"""Tests for jaxlm.objectives.denoising: T5 span corruption against T5's reference numbers, and
the span-length distribution."""

import math

import numpy as np
import pytest

from jaxlm import objectives as O

from ._util import EOS, VOCAB, chi2_gof, reconstruct, sentinels


def test_span_corruption_lengths_t5_reference():
    assert O.span_corruption_lengths(512) == (568, 114)
    assert O.span_corruption_lengths(512, 0.15, 3.0) == (568, 114)
    # Every returned raw length must produce exactly inputs_length after corruption.
    for inputs_length in (64, 128, 256, 1024):
        raw, targets_len = O.span_corruption_lengths(inputs_length)
        out = O.span_corruption(np.arange(10, 10 + raw), seed=0, vocab_size=VOCAB)
        assert out["encoder_input_tokens"].size == inputs_length
        assert out["decoder_target_tokens"].size == targets_len


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_span_corruption_t5_reference_shapes(seed):
    tokens = np.arange(10, 10 + 568, dtype=np.int32)
    out = O.span_corruption(tokens, seed=seed, vocab_size=VOCAB)
    inputs, targets = out["encoder_input_tokens"], out["decoder_target_tokens"]
    assert inputs.size == 512 and targets.size == 114
    assert inputs[-1] == EOS and targets[-1] == EOS
    expected_sentinels = VOCAB - 1 - np.arange(28)
    np.testing.assert_array_equal(sentinels(inputs), expected_sentinels)
    np.testing.assert_array_equal(sentinels(targets), expected_sentinels)
    # T5 interleaves non-noise first and noise last: inputs end with a sentinel, targets start
    # with one, and neither has two sentinels in a row (no empty spans).
    assert inputs[-2] == VOCAB - 28 and inputs[0] < VOCAB - O.NUM_SENTINELS
    assert targets[0] == VOCAB - 1
    for x in (inputs, targets):
        s = x >= VOCAB - O.NUM_SENTINELS
        assert not np.any(s[1:] & s[:-1])
    assert reconstruct(inputs, targets, VOCAB) == tokens.tolist()
    assert (targets.size - 1 - 28) == 85  # noise tokens
    np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, targets[:-1]])
    np.testing.assert_array_equal(out["decoder_loss_weights"], np.ones(114))
    assert all(v.dtype == np.int32 for v in out.values())


def test_span_corruption_deterministic_per_seed():
    tokens = np.arange(10, 10 + 568, dtype=np.int32)
    a = O.span_corruption(tokens, seed=7, vocab_size=VOCAB)
    b = O.span_corruption(tokens, seed=7, vocab_size=VOCAB)
    c = O.span_corruption(tokens, seed=8, vocab_size=VOCAB)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["encoder_input_tokens"], c["encoder_input_tokens"])
    # Any int seed, taken mod 2**64: tf.data's negative int64 seeds and their uint64 twins agree.
    for seed in (-1, -(2**63)):
        np.testing.assert_array_equal(
            O.random_spans_noise_mask(568, seed=seed),
            O.random_spans_noise_mask(568, seed=seed + 2**64),
        )


def test_span_corruption_reconstructs_other_rates_and_short_inputs():
    rng = np.random.default_rng(0)
    for seed in range(40):
        n = int(rng.integers(0, 300))
        tokens = rng.integers(10, 30000, size=n).astype(np.int32)
        density = float(rng.choice([0.15, 0.5]))
        mean = float(rng.choice([3.0, 8.0, 64.0]))
        out = O.span_corruption(
            tokens, seed=seed, vocab_size=VOCAB, noise_density=density, mean_noise_span_length=mean
        )
        assert reconstruct(out["encoder_input_tokens"], out["decoder_target_tokens"], VOCAB) == (
            tokens.tolist()
        )
        if n >= 2:
            mask = O.random_spans_noise_mask(
                n, seed=seed, noise_density=density, mean_noise_span_length=mean
            )
            assert mask.sum() == min(max(round(n * density), 1), n - 1)


def _noise_span_lengths(mask: np.ndarray) -> np.ndarray:
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _composition_pmf(n: int, k: int) -> np.ndarray:
    """P(len = j), j = 1..n-k+1, of one part of a uniform composition of n into k parts."""
    j = np.arange(1, n - k + 2)
    return np.array([math.comb(n - jj - 1, k - 2) for jj in j], float) / math.comb(n - 1, k - 1)


def test_span_length_distribution_is_uniform_composition():
    n_noise, k = 85, 28
    pmf = _composition_pmf(n_noise, k)
    assert pmf.sum() == pytest.approx(1.0)
    lengths = []
    for seed in range(3000):
        mask = O.random_spans_noise_mask(568, seed=seed)
        spans = _noise_span_lengths(mask)
        assert spans.size == k and spans.sum() == n_noise
        assert mask[-1]  # the last span is noise
        lengths.append(spans)
    lengths = np.concatenate(lengths)
    observed = np.bincount(lengths, minlength=pmf.size + 1)[1:]
    assert observed.size == pmf.size
    assert chi2_gof(observed, pmf) > 1e-3

    # The test has power: the same observations reject plausible wrong span-length laws ...
    j = np.arange(1, pmf.size + 1)
    p = k / n_noise  # geometric with the right mean
    geometric = (1 - p) ** (j - 1) * p
    geometric[-1] += 1 - geometric.sum()
    fixed3 = (j == 3).astype(float)
    for wrong in (geometric, fixed3):
        assert chi2_gof(observed, wrong) < 1e-6
    # ... and samples from a wrong law (independent geometric spans) are rejected against pmf.
    fake = np.random.default_rng(0).geometric(p, size=lengths.size)
    fake_counts = np.bincount(np.minimum(fake, pmf.size), minlength=pmf.size + 1)[1:]
    assert chi2_gof(fake_counts, pmf) < 1e-6


def test_span_max_lengths_match_the_objective():
    for n in (1, 2, 3, 5, 17, 40, 70):
        for density, mean in ((0.15, 3.0), (0.5, 8.0)):
            out = O.span_corruption(
                np.arange(7, 7 + n),
                seed=n,
                vocab_size=384,
                noise_density=density,
                mean_noise_span_length=mean,
            )
            enc, dec = O.span_corruption_max_lengths(n, density, mean)
            assert out["encoder_input_tokens"].size <= enc
            assert out["decoder_target_tokens"].size <= dec
            if n > 1:
                assert O.span_corruption_max_lengths(n - 1, density, mean) <= (enc, dec)
