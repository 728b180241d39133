"""Tests for jaxlm.objectives.deshuffle: the input is a uniform permutation of the target."""

import numpy as np

from jaxlm import objectives as O

from ._util import EOS, chi2_gof


def test_input_is_a_permutation_of_the_target():
    rng = np.random.default_rng(0)
    for seed in range(200):
        x = rng.integers(3, 300, size=int(rng.integers(0, 100))).astype(np.int32)
        out = O.deshuffle(x, seed=seed)
        np.testing.assert_array_equal(out["decoder_target_tokens"], np.r_[x, EOS])
        np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, x])
        assert out["encoder_input_tokens"][-1] == EOS
        np.testing.assert_array_equal(np.sort(out["encoder_input_tokens"][:-1]), np.sort(x))
        assert out["decoder_loss_weights"].sum() == x.size + 1


def test_the_shuffle_is_uniform_and_seeded():
    x = np.arange(10, 20, dtype=np.int32)
    where_first = np.zeros(10, int)
    for seed in range(2000):
        where_first[np.flatnonzero(O.deshuffle(x, seed=seed)["encoder_input_tokens"] == 10)] += 1
    assert chi2_gof(where_first, np.full(10, 0.1)) > 1e-3
    a, b = O.deshuffle(x, seed=5), O.deshuffle(x, seed=5)
    np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])
    assert not np.array_equal(a["encoder_input_tokens"],
                              O.deshuffle(x, seed=6)["encoder_input_tokens"])
