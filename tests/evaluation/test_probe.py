"""Frozen-feature probe: pooled features per family, the probe split and k-shot subsets, the
logistic regression (separation, optimality, the closed 2-class form) and the correctness matrix."""

import numpy as np
import pytest
from scipy import optimize

from jaxlm.evaluation.probe import (features, kshot_subsets, logistic_regression,
                                    probe_accuracy, split_for_probe)

from ..models._util import FAMILIES, make, tiny


def _labels(per_class=(40, 30, 25)):
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(len(per_class)), per_class)).astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Features


@pytest.mark.parametrize("family", FAMILIES)
def test_features_are_mean_pooled_over_real_tokens(family):
    cfg = tiny(family, num_layers=1)
    model, params = make(cfg)
    rng = np.random.default_rng(0)
    lengths = [3, 7, 5, 2, 6]
    tokens = np.zeros((5, 8), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n - 1] = rng.integers(3, 200, n - 1)
        tokens[i, n - 1] = 1  # EOS
    x = features(model, params, family, tokens, batch_size=2)  # 3 batches, the last padded
    assert x.shape == (5, cfg.d_model) and x.dtype == np.float32
    for i, n in enumerate(lengths):  # each row alone, unpadded: the reference
        row = tokens[i:i + 1, :n]
        if family == "decoder":
            batch = {"decoder_input_tokens": np.pad(row[:, :-1], ((0, 0), (1, 0)))}
            hidden = model.apply({"params": params}, batch, return_hidden=True)
        elif family == "encoder":
            hidden = model.apply({"params": params}, {"encoder_input_tokens": row},
                                 return_hidden=True)
        else:
            hidden = model.apply({"params": params}, {"encoder_input_tokens": row},
                                 method=model.encode)
        np.testing.assert_allclose(x[i], np.asarray(hidden)[0].mean(0), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Splits


def test_split_for_probe_is_disjoint_balanced_and_deterministic():
    labels = _labels()
    pool, test = split_for_probe(labels, pool_per_class=10, seed=0)
    assert np.intersect1d(pool, test).size == 0
    np.testing.assert_array_equal(np.union1d(pool, test), np.arange(len(labels)))
    np.testing.assert_array_equal(np.bincount(labels[pool]), [10, 10, 10])
    again = split_for_probe(labels, pool_per_class=10, seed=0)
    np.testing.assert_array_equal(again[0], pool)
    assert not np.array_equal(split_for_probe(labels, pool_per_class=10, seed=1)[0], pool)
    with pytest.raises(ValueError, match="class 2 has 25"):
        split_for_probe(labels, pool_per_class=25)


def test_kshot_subsets_never_touch_the_test_set():
    labels = _labels()
    pool, test = split_for_probe(labels, pool_per_class=12, seed=0)
    subsets = kshot_subsets(labels, 4, num_subsets=10, seed=0, test_indices=test)
    assert subsets.shape == (10, 12)
    assert not np.isin(subsets, test).any()
    for row in subsets:
        assert len(np.unique(row)) == len(row)  # no example twice in a subset
        np.testing.assert_array_equal(np.bincount(labels[row], minlength=3), [4, 4, 4])
    assert len({tuple(r) for r in subsets}) == 10  # the subsets differ
    np.testing.assert_array_equal(
        kshot_subsets(labels, 4, num_subsets=10, seed=0, test_indices=test), subsets)
    assert not np.array_equal(
        kshot_subsets(labels, 4, num_subsets=10, seed=1, test_indices=test), subsets)
    with pytest.raises(ValueError, match="k=13 needs"):
        kshot_subsets(labels, 13, test_indices=test)


# --------------------------------------------------------------------------------------------------
# Logistic regression


def _objective_and_grad(z, y, w, b, l2):
    """Independent numpy form of sum CE + l2/2 ||w||^2, divided by n, and its gradient."""
    logits = z @ w + b
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    onehot = np.eye(w.shape[1])[y]
    n = len(y)
    value = (-np.log(p[np.arange(n), y]).sum() + 0.5 * l2 * (w * w).sum()) / n
    return value, ((z.T @ (p - onehot) + l2 * w) / n, (p - onehot).sum(0) / n)


def test_logistic_regression_separates_and_reaches_the_optimum():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 5)) * 6 + 20  # far from 0: standardisation matters
    y = np.repeat(np.arange(3), 20)
    x = centers[y] + rng.normal(size=(60, 5))
    clf = logistic_regression(x, y, l2=1.0)
    assert clf.converged
    np.testing.assert_array_equal(clf.predict(x), y)
    y_new = np.repeat(np.arange(3), 50)
    assert (clf.predict(centers[y_new] + rng.normal(size=(150, 5))) == y_new).mean() > 0.95
    np.testing.assert_allclose(clf.mean, x.mean(0))
    np.testing.assert_allclose(clf.scale, x.std(0))
    z = (x - clf.mean) / clf.scale
    _, (gw, gb) = _objective_and_grad(z, y, clf.weights, clf.bias, 1.0)
    assert np.abs(gw).max() < 1e-4 and np.abs(gb).max() < 1e-4
    # The reported gradient norm is the one at the returned point.
    assert clf.grad_norm == pytest.approx(np.sqrt((gw ** 2).sum() + (gb ** 2).sum()), abs=2e-6)


def test_two_classes_match_binary_logistic_regression():
    # With two classes the penalty splits the weight evenly (w1 = -w0), so the multinomial fit is
    # the binary one with w = w1 - w0 and penalty l2/4 ||w||^2; solve that one with scipy.
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 4)) + y[:, None] * np.array([1.0, -0.5, 0.0, 0.3])
    l2 = 2.0
    clf = logistic_regression(x, y, l2=l2)
    z = (x - x.mean(0)) / x.std(0)
    sign = 2 * y - 1

    def binary(theta):
        margin = sign * (z @ theta[:-1] + theta[-1])
        value = np.logaddexp(0, -margin).sum() + 0.25 * l2 * theta[:-1] @ theta[:-1]
        s = -sign / (1 + np.exp(margin))
        return value, np.append(z.T @ s + 0.5 * l2 * theta[:-1], s.sum())

    ref = optimize.minimize(binary, np.zeros(5), jac=True, method="L-BFGS-B",
                            options={"gtol": 1e-10}).x
    np.testing.assert_allclose(clf.weights[:, 1] - clf.weights[:, 0], ref[:-1], atol=1e-3)
    np.testing.assert_allclose(clf.weights[:, 1], -clf.weights[:, 0], atol=1e-3)
    np.testing.assert_allclose(clf.bias[1] - clf.bias[0], ref[-1], atol=1e-3)


def test_logistic_regression_refuses_bad_input():
    with pytest.raises(ValueError, match="l2"):
        logistic_regression(np.zeros((4, 2)), np.array([0, 1, 0, 1]), l2=0.0)
    with pytest.raises(ValueError, match=r"x_train \[N, D\]"):
        logistic_regression(np.zeros((4, 2)), np.array([0, 1, 0]))


# --------------------------------------------------------------------------------------------------
# The probe


def test_probe_accuracy_gives_paired_correctness_matrices():
    labels = np.repeat(np.arange(4), 60).astype(np.int32)
    rng = np.random.default_rng(0)
    informative = np.eye(4)[labels] * 4 + rng.normal(size=(240, 4))
    noise = rng.normal(size=(240, 4))
    pool, test = split_for_probe(labels, pool_per_class=20, seed=0)
    good = probe_accuracy(informative, labels, pool, test, ks=(4, 16), num_subsets=3)
    bad = probe_accuracy(noise, labels, pool, test, ks=(4, 16), num_subsets=3)
    assert set(good) == {4, 16}
    assert good[16].shape == (3, len(test)) and set(np.unique(good[16])) <= {0.0, 1.0}
    assert good[16].mean() > 0.95 and bad[16].mean() < 0.45
    again = probe_accuracy(informative, labels, pool, test, ks=(4, 16), num_subsets=3)
    np.testing.assert_array_equal(again[4], good[4])
    with pytest.raises(ValueError, match="share"):
        probe_accuracy(noise, labels, pool, np.append(test, pool[0]), ks=(4,))
