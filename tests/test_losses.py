"""The weighted cross-entropy loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.losses import cross_entropy, default_chunk, fused_weighted_loss, weighted_loss


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


@pytest.mark.parametrize("label_smoothing,z_loss,vocab_axis,with_bias", [
    (0.0, 0.0, 0, False), (0.1, 1e-2, 1, True), (0.2, 0.0, 0, True)])
def test_fused_loss_matches_the_logits_loss_in_value_and_gradient(label_smoothing, z_loss,
                                                                  vocab_axis, with_bias):
    keys = jax.random.split(jax.random.key(3), 4)
    hidden = jax.random.normal(keys[0], (2, 12, 16))
    matrix = jax.random.normal(keys[1], (37, 16) if vocab_axis == 0 else (16, 37)) * 0.3
    bias = jax.random.normal(keys[2], (37,)) if with_bias else None
    batch = {"decoder_target_tokens": jax.random.randint(keys[3], (2, 12), 0, 37),
             "decoder_loss_weights": jnp.tile(jnp.arange(12) % 3 > 0, (2, 1)).astype(jnp.int32)}

    def reference(h, m, b):
        logits = jnp.einsum("bld,vd->blv" if vocab_axis == 0 else "bld,dv->blv", h, m)
        return weighted_loss("decoder", logits if b is None else logits + b, batch,
                             label_smoothing, z_loss)

    def fused(h, m, b):
        return fused_weighted_loss("decoder", h, m, b, batch, vocab_axis=vocab_axis,
                                   label_smoothing=label_smoothing, z_loss=z_loss, chunk=4)

    argnums = (0, 1, 2) if with_bias else (0, 1)
    (want, want_sums), want_grads = jax.value_and_grad(reference, argnums, has_aux=True)(
        hidden, matrix, bias)
    (got, got_sums), got_grads = jax.jit(jax.value_and_grad(fused, argnums, has_aux=True))(
        hidden, matrix, bias)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for key in want_sums:
        np.testing.assert_allclose(got_sums[key], want_sums[key], rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    assert float(jax.jit(fused)(hidden, matrix, bias)[0]) == pytest.approx(float(want), rel=1e-5)


def test_fused_loss_never_materialises_the_full_logits():
    hidden = jnp.ones((4, 64, 8))
    matrix = jnp.ones((1000, 8))
    batch = {"decoder_target_tokens": jnp.ones((4, 64), jnp.int32)}
    grad = jax.grad(lambda h, m: fused_weighted_loss("decoder", h, m, None, batch, chunk=8)[0],
                    argnums=(0, 1))
    hlo = jax.jit(grad).lower(hidden, matrix).as_text()
    # Only [batch * chunk, vocab] tiles of logits, never [batch, length, vocab] (or flattened).
    assert "32x1000xf32" in hlo and "4x64x1000" not in hlo and "256x1000" not in hlo


def test_default_chunk_divides_the_length_within_the_budget():
    assert default_chunk(8, 256, 32128) == 32
    assert default_chunk(1, 7, 10) == 7
    assert default_chunk(4, 1024, 50257, budget=2 ** 22) == 16
