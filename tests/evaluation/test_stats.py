"""Bootstrap intervals and paired differences: known-difference and null cases, calibration,
the two-way (subsets x examples) resampling and determinism."""

import numpy as np
import pytest

from jaxlm.evaluation.stats import bootstrap_ci, bootstrap_means, paired_bootstrap


def _known_difference(n: int = 2000, margin: float = 0.1, seed: int = 0):
    """a correct on 70% of the examples, b on exactly `margin` fewer, all inside a's."""
    rng = np.random.default_rng(seed)
    a = np.zeros(n)
    right = rng.permutation(n)[:int(0.7 * n)]
    a[right] = 1
    b = a.copy()
    b[right[:int(margin * n)]] = 0
    return a, b


def test_known_difference_is_found_and_covered():
    a, b = _known_difference()
    d = paired_bootstrap(a, b)
    assert d.difference == pytest.approx(0.1)
    assert 0 < d.low < 0.1 < d.high
    assert d.significant and d.p_value < 0.01
    reverse = paired_bootstrap(b, a)
    assert reverse.difference == pytest.approx(-0.1) and reverse.high < 0 and reverse.significant


def test_null_case_is_not_significant():
    rng = np.random.default_rng(1)
    a = (rng.random(2000) < 0.7).astype(float)
    b = (rng.random(2000) < 0.7).astype(float)
    d = paired_bootstrap(a, b)
    assert d.low < 0 < d.high
    assert not d.significant and d.p_value > 0.05
    same = paired_bootstrap(a, a)
    assert same.difference == same.low == same.high == 0 and same.p_value == 1.0


def test_paired_test_is_calibrated_under_the_null():
    # Two systems of equal accuracy: about 5% of datasets are called significant, not far more.
    rng = np.random.default_rng(2)
    hits = [paired_bootstrap((rng.random(300) < 0.6).astype(float),
                             (rng.random(300) < 0.6).astype(float),
                             num_resamples=1000, seed=i).significant for i in range(200)]
    assert 0.0 < np.mean(hits) < 0.11


def test_interval_covers_the_true_accuracy():
    rng = np.random.default_rng(3)
    covered = []
    for i in range(200):
        ci = bootstrap_ci((rng.random(400) < 0.7).astype(float), num_resamples=1000, seed=i)
        covered.append(ci.low <= 0.7 <= ci.high)
    assert 0.89 <= np.mean(covered) <= 0.99


def test_bootstrap_spread_matches_the_binomial_standard_error():
    x = np.zeros(2000)
    x[:1400] = 1
    means = bootstrap_means(x, 10_000, seed=0)
    assert means.mean() == pytest.approx(0.7, abs=2e-3)
    assert means.std() == pytest.approx(np.sqrt(0.7 * 0.3 / 2000), rel=0.05)
    ci = bootstrap_ci(x)
    assert ci.mean == 0.7 and ci.low < 0.7 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 2000), rel=0.06)


def test_matrix_resamples_subsets_too():
    # Rows constant along examples: only the subset draw moves the mean, so the bootstrap spread
    # is the standard error of the mean of S rows.
    rows = np.array([0.2, 0.4, 0.5, 0.6, 0.9, 0.3, 0.7, 0.8, 0.1, 0.5])
    matrix = np.repeat(rows[:, None], 50, axis=1)
    means = bootstrap_means(matrix, 10_000, seed=0)
    assert means.std() == pytest.approx(rows.std() / np.sqrt(len(rows)), rel=0.05)
    # With a subset effect, the two-way interval is wider than resampling examples alone.
    rng = np.random.default_rng(4)
    m = (rng.random((10, 2000)) < rows[:, None]).astype(float)
    two_way = bootstrap_ci(m)
    examples_only = bootstrap_ci(m.mean(0))
    assert two_way.mean == pytest.approx(examples_only.mean)
    assert two_way.high - two_way.low > 2 * (examples_only.high - examples_only.low)


def test_paired_matrices_and_errors():
    a, b = _known_difference(1000)
    d = paired_bootstrap(np.stack([a] * 5), np.stack([b] * 5))
    assert d.difference == pytest.approx(0.1) and d.significant
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(a, confidence=95)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.zeros((2, 2, 2)))


def test_deterministic_for_a_seed():
    a, b = _known_difference(500)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert bootstrap_ci(a, seed=7) == bootstrap_ci(a, seed=7)
    np.testing.assert_array_equal(bootstrap_means(a, 100, seed=7), bootstrap_means(a, 100, seed=7))
    assert not np.array_equal(bootstrap_means(a, 100, seed=7), bootstrap_means(a, 100, seed=8))
