"""The weighted cross-entropy loss: one per-token definition, the plain and the fused path."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxlm import sharding
from jaxlm.losses import (default_chunk, first_argmax, fused_weighted_loss, token_loss,
                          weighted_loss)


def test_token_loss_matches_log_softmax_and_argmax():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 11))
    targets = jnp.array([[1, 2, 3], [4, 5, 10]])
    loss, correct = token_loss(logits, targets)
    expected = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_array_equal(correct, jnp.argmax(logits, -1) == targets)


def test_a_tie_counts_only_for_the_first_maximum():
    logits = jnp.array([[0.0, 2.0, 2.0, 1.0]] * 3)
    _, correct = token_loss(logits, jnp.array([1, 2, 3]))
    np.testing.assert_array_equal(correct, [True, False, False])


def test_first_argmax_is_argmax_ties_included():
    # Few distinct values, so most rows hold tied maxima; a row of NaN gives an index no target has.
    x = jax.random.randint(jax.random.key(1), (64, 5, 37), 0, 4).astype(jnp.float32)
    np.testing.assert_array_equal(first_argmax(x), jnp.argmax(x, axis=-1))
    assert first_argmax(x).dtype == jnp.int32
    assert int(first_argmax(jnp.array([[1.0, jnp.nan, 0.0]]))[0]) == 3


def test_label_smoothing_and_z_loss():
    logits = jax.random.normal(jax.random.key(1), (1, 4, 7))
    targets = jnp.array([[0, 1, 2, 3]])
    smooth, _ = token_loss(logits, targets, label_smoothing=0.1)
    logp = jax.nn.log_softmax(logits)
    onehot = jax.nn.one_hot(targets, 7)
    expected = -jnp.sum((0.9 * onehot + 0.1 / 7) * logp, -1)
    np.testing.assert_allclose(smooth, expected, rtol=1e-5)
    plain, _ = token_loss(logits, targets)
    with_z, _ = token_loss(logits, targets, z_loss=1e-2)
    np.testing.assert_allclose(with_z - plain, 1e-2 * jax.nn.logsumexp(logits, -1) ** 2,
                               rtol=1e-5)


def test_weights_select_the_tokens_that_count():
    logits = jax.random.normal(jax.random.key(2), (1, 4, 5))
    batch = {"decoder_target_tokens": jnp.array([[1, 2, 3, 4]]),
             "decoder_loss_weights": jnp.array([[0, 0, 1, 1]])}
    loss, metrics = weighted_loss("decoder", logits, batch)
    per_token, _ = token_loss(logits, batch["decoder_target_tokens"])
    assert float(loss) == pytest.approx(float(per_token[0, 2:].mean()), rel=1e-6)
    assert float(metrics["weight_sum"]) == 2.0


def test_default_weights_skip_padding_and_missing_targets_are_named():
    logits = jnp.zeros((1, 3, 5))
    _, metrics = weighted_loss("encoder", logits, {"encoder_target_tokens": jnp.array([[3, 0, 0]])})
    assert float(metrics["weight_sum"]) == 1.0
    with pytest.raises(ValueError, match="decoder_target_tokens"):
        weighted_loss("encoder_decoder", logits, {"encoder_input_tokens": jnp.ones((1, 3), int)})


def _problem(vocab_axis, with_bias, batch_size=2, length=12, vocab=37, d=16, ties=False):
    keys = jax.random.split(jax.random.key(3), 4)
    hidden = jax.random.normal(keys[0], (batch_size, length, d))
    matrix = jax.random.normal(keys[1], (vocab, d) if vocab_axis == 0 else (d, vocab)) * 0.3
    if ties:  # ids 5 and 6 get identical logits; targets alternate between them
        if vocab_axis == 0:
            matrix = matrix.at[6].set(matrix[5])
        else:
            matrix = matrix.at[:, 6].set(matrix[:, 5])
    bias = jax.random.normal(keys[2], (vocab,)) if with_bias else None
    if ties and with_bias:
        bias = bias.at[6].set(bias[5])
    targets = jax.random.randint(keys[3], (batch_size, length), 0, vocab)
    if ties:
        hidden = hidden.at[..., :].multiply(0.01)
        tie_ids = 5 + jnp.arange(length) % 2
        bias = None if bias is None else bias.at[5].add(10.0).at[6].add(10.0)
        targets = jnp.broadcast_to(tie_ids, targets.shape)
    batch = {"decoder_target_tokens": targets,
             "decoder_loss_weights": jnp.tile(jnp.arange(length) % 3 > 0,
                                              (batch_size, 1)).astype(jnp.int32)}
    return hidden, matrix, bias, batch


def _reference(batch, vocab_axis, label_smoothing=0.0, z_loss=0.0):
    def loss(h, m, b):
        logits = jnp.einsum("bld,vd->blv" if vocab_axis == 0 else "bld,dv->blv", h, m)
        return weighted_loss("decoder", logits if b is None else logits + b, batch,
                             label_smoothing, z_loss)
    return loss


def _assert_fused_matches_plain(fused, reference, hidden, matrix, bias, jit=jax.jit):
    argnums = (0, 1) if bias is None else (0, 1, 2)
    (want, want_sums), want_grads = jax.value_and_grad(reference, argnums, has_aux=True)(
        hidden, matrix, bias)
    (got, got_sums), got_grads = jit(jax.value_and_grad(fused, argnums, has_aux=True))(
        hidden, matrix, bias)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for key in want_sums:
        np.testing.assert_allclose(got_sums[key], want_sums[key], rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    assert float(jit(fused)(hidden, matrix, bias)[0]) == pytest.approx(float(want), rel=1e-5)
    return want_sums


@pytest.mark.parametrize("label_smoothing,z_loss,vocab_axis,with_bias", [
    (0.0, 0.0, 0, False), (0.1, 1e-2, 1, True), (0.2, 0.0, 0, True)])
def test_fused_loss_matches_the_logits_loss_in_value_and_gradient(label_smoothing, z_loss,
                                                                  vocab_axis, with_bias):
    hidden, matrix, bias, batch = _problem(vocab_axis, with_bias)

    def fused(h, m, b):
        return fused_weighted_loss("decoder", h, m, b, batch, vocab_axis=vocab_axis,
                                   label_smoothing=label_smoothing, z_loss=z_loss, chunk=4)

    _assert_fused_matches_plain(fused, _reference(batch, vocab_axis, label_smoothing, z_loss),
                                hidden, matrix, bias)


@pytest.mark.parametrize("vocab_axis", [0, 1])
def test_fused_and_plain_accuracy_agree_on_ties(vocab_axis):
    hidden, matrix, bias, batch = _problem(vocab_axis, with_bias=True, ties=True)

    def fused(h, m, b):
        return fused_weighted_loss("decoder", h, m, b, batch, vocab_axis=vocab_axis, chunk=3)

    sums = _assert_fused_matches_plain(fused, _reference(batch, vocab_axis), hidden, matrix, bias)
    # Every weighted target is one of two exactly tied ids, and only id 5 (the first) counts.
    weights = batch["decoder_loss_weights"]
    first = (batch["decoder_target_tokens"] == 5) * weights
    assert float(sums["correct_sum"]) == float(first.sum()) > 0
    assert float(sums["correct_sum"]) < float(weights.sum())


def test_fused_loss_never_materialises_the_full_logits():
    hidden = jnp.ones((4, 64, 8))
    matrix = jnp.ones((1000, 8))
    batch = {"decoder_target_tokens": jnp.ones((4, 64), jnp.int32)}
    grad = jax.grad(lambda h, m: fused_weighted_loss("decoder", h, m, None, batch, chunk=8)[0],
                    argnums=(0, 1))
    hlo = jax.jit(grad).lower(hidden, matrix).as_text()
    # Only [batch * chunk, vocab] tiles of logits, never [batch, length, vocab] (or flattened).
    assert "32x1000xf32" in hlo and "4x64x1000" not in hlo and "256x1000" not in hlo


@pytest.mark.parametrize("batch,length,vocab,budget", [
    (8, 256, 32128, 2 ** 23), (1, 7, 10, 2 ** 23), (4, 1024, 50257, 2 ** 22), (2, 6, 100, 50)])
def test_default_chunk_is_the_largest_divisor_within_the_budget(batch, length, vocab, budget):
    chunk = default_chunk(batch, length, vocab, budget=budget)
    assert length % chunk == 0
    assert chunk == 1 or batch * chunk * vocab <= budget
    larger = [c for c in range(chunk + 1, length + 1) if length % c == 0]
    assert not larger or batch * larger[0] * vocab > budget
    # Fewer rows per device leave room for longer chunks.
    assert default_chunk(max(batch // 2, 1), length, vocab, budget=budget) >= chunk


def _while_bodies(hlo: str) -> dict[str, str]:
    """{name: text} of every computation that is the body of a while loop in HLO text."""
    names = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    computations = {}
    for block in re.split(r"\n(?=\S)", hlo):
        match = re.match(r"%?([\w.\-]+)\s", block)
        if match and match.group(1) in names:
            computations[match.group(1)] = block
    return computations


@pytest.mark.parametrize("vocab_axis", [0, 1])
def test_on_a_mesh_the_vocab_gradient_is_reduced_once_after_the_chunk_loop(vocab_axis):
    mesh = sharding.make_mesh(2, 4, 1)
    vocab, d = 96, 16
    hidden, matrix, bias, batch = _problem(vocab_axis, True, batch_size=16, length=32,
                                           vocab=vocab, d=d)

    def fused(h, m, b):
        return fused_weighted_loss("decoder", h, m, b, batch, vocab_axis=vocab_axis, chunk=4)

    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    # The matrix sharded as the trainer shards it: `embed` over fsdp.
    matrix_sharding = NamedSharding(mesh, PartitionSpec(*((None, "fsdp") if vocab_axis == 0
                                                          else ("fsdp", None))))
    replicated = NamedSharding(mesh, PartitionSpec())
    grad = jax.jit(jax.grad(lambda h, m, b: fused(h, m, b)[0], argnums=(0, 1, 2)),
                   in_shardings=(rows, matrix_sharding, replicated))
    with sharding.activate(mesh):
        hlo = grad.lower(hidden, matrix, bias).compile().as_text()
        _assert_fused_matches_plain(fused, _reference(batch, vocab_axis), hidden, matrix, bias,
                                    jit=jax.jit)
    bodies = _while_bodies(hlo)
    # The loop runs 32 / 4 = 8 chunks of the 16 / 8 = 2 rows each device holds.
    loop = [b for b in bodies.values() if f"f32[{2 * 4},{vocab}]" in b]
    assert len(loop) == 1, sorted(bodies)
    assert not re.search(r"(all-reduce|reduce-scatter)", loop[0]), loop[0]
    # ... and the matrix gradient does cross devices, once, outside the loop.
    collectives = [line for line in hlo.splitlines()
                   if re.search(r" (all-reduce|reduce-scatter)(-start)?\(", line)]
    shape = f"f32[{vocab},{d}]" if vocab_axis == 0 else f"f32[{d},{vocab}]"
    assert sum(shape in line for line in collectives) == 1, collectives
