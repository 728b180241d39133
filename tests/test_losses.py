"""The weighted cross-entropy loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.losses import cross_entropy, weighted_loss


def test_cross_entropy_matches_log_softmax():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 11))
    targets = jnp.array([[1, 2, 3], [4, 5, 10]])
    loss, correct = cross_entropy(logits, targets)
    expected = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_array_equal(correct, jnp.argmax(logits, -1) == targets)


def test_label_smoothing_and_z_loss():
    logits = jax.random.normal(jax.random.key(1), (1, 4, 7))
    targets = jnp.array([[0, 1, 2, 3]])
    smooth, _ = cross_entropy(logits, targets, label_smoothing=0.1)
    logp = jax.nn.log_softmax(logits)
    onehot = jax.nn.one_hot(targets, 7)
    expected = -jnp.sum((0.9 * onehot + 0.1 / 7) * logp, -1)
    np.testing.assert_allclose(smooth, expected, rtol=1e-5)
    plain, _ = cross_entropy(logits, targets)
    with_z, _ = cross_entropy(logits, targets, z_loss=1e-2)
    np.testing.assert_allclose(with_z - plain, 1e-2 * jax.nn.logsumexp(logits, -1) ** 2,
                               rtol=1e-5)


def test_weights_select_the_tokens_that_count():
    logits = jax.random.normal(jax.random.key(2), (1, 4, 5))
    batch = {"decoder_target_tokens": jnp.array([[1, 2, 3, 4]]),
             "decoder_loss_weights": jnp.array([[0, 0, 1, 1]])}
    loss, metrics = weighted_loss("decoder", logits, batch)
    per_token, _ = cross_entropy(logits, batch["decoder_target_tokens"])
    assert float(loss) == pytest.approx(float(per_token[0, 2:].mean()), rel=1e-6)
    assert float(metrics["weight_sum"]) == 2.0


def test_default_weights_skip_padding_and_missing_targets_are_named():
    logits = jnp.zeros((1, 3, 5))
    _, metrics = weighted_loss("encoder", logits, {"encoder_target_tokens": jnp.array([[3, 0, 0]])})
    assert float(metrics["weight_sum"]) == 1.0
    with pytest.raises(ValueError, match="decoder_target_tokens"):
        weighted_loss("encoder_decoder", logits, {"encoder_input_tokens": jnp.ones((1, 3), int)})
