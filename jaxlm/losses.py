"""The training loss: cross-entropy weighted by the objective's `*_loss_weights`.

The loss reads features only (targets and weights of the family's output stream), so it knows
nothing of which objective produced them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# The stream whose logits the model returns, per family: (targets, weights).
TARGET_FEATURES = {
    "decoder": ("decoder_target_tokens", "decoder_loss_weights"),
    "encoder": ("encoder_target_tokens", "encoder_loss_weights"),
    "encoder_decoder": ("decoder_target_tokens", "decoder_loss_weights"),
}


def cross_entropy(logits_BxLxV: Array, targets_BxL: Array, label_smoothing: float = 0.0,
                  z_loss: float = 0.0) -> tuple[Array, Array]:
    """Per-token cross-entropy [B, L] (+ z-loss) and per-token correctness, in float32.

    z_loss adds z_loss * logsumexp(logits)^2 (PaLM / T5X), keeping the softmax normalizer near 1.
    Label smoothing spreads `label_smoothing` of the target mass uniformly over the vocabulary.
    """
    logits = logits_BxLxV.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
    loss = log_z - target_logit
    if label_smoothing:
        mean_logit = jnp.mean(logits, axis=-1)
        loss = (1.0 - label_smoothing) * loss + label_smoothing * (log_z - mean_logit)
    if z_loss:
        loss = loss + z_loss * jnp.square(log_z)
    correct = jnp.argmax(logits, axis=-1) == targets_BxL
    return loss, correct


def targets_and_weights(family: str, batch: Mapping[str, Array]) -> tuple[Array, Array]:
    """The family's targets and loss weights; weights default to non-padding targets."""
    target_name, weight_name = TARGET_FEATURES[family]
    if target_name not in batch:
        raise ValueError(f"Batch feature {target_name!r} is required to train a {family} model; "
                         f"the batch has: {sorted(batch)}.")
    targets = batch[target_name]
    weights = batch.get(weight_name)
    if weights is None:
        weights = targets > 0
    return targets, weights.astype(jnp.float32)


# Next-sentence prediction: the label at each example's [CLS] and where they are.
NSP_FEATURES = ("encoder_nsp_labels", "encoder_nsp_weights")
NSP_SUMS = ("nsp_loss_sum", "nsp_correct_sum", "nsp_weight_sum")


def nsp_sums(logits_BxLxC: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Summed cross-entropy, correct count and weight of the classification logits at the
    positions `encoder_nsp_weights` marks, against `encoder_nsp_labels`."""
    labels, weights = (batch[k] for k in NSP_FEATURES)
    loss, correct = cross_entropy(logits_BxLxC, labels)
    weights = weights.astype(jnp.float32)
    return dict(zip(NSP_SUMS, (jnp.sum(loss * weights), jnp.sum(correct * weights),
                               jnp.sum(weights))))


def nsp_loss_scale(family: str, batch: Mapping[str, Array]) -> Array:
    """Token weight / NSP weight of a whole batch: the factor on the summed NSP loss that makes
    the step's gradient that of mean token loss + mean NSP loss (BERT's sum of the two), since
    the train step divides the summed gradient by the token weight."""
    _, weights = targets_and_weights(family, batch)
    nsp_weight = jnp.sum(batch[NSP_FEATURES[1]].astype(jnp.float32))
    return jnp.maximum(jnp.sum(weights), 1.0) / jnp.maximum(nsp_weight, 1.0)


def weighted_loss(family: str, logits: Array, batch: Mapping[str, Array],
                  label_smoothing: float = 0.0, z_loss: float = 0.0) -> tuple[Array, dict]:
    """Mean loss over weighted tokens, and summed metrics (loss_sum, correct_sum, weight_sum)
    that can be added across micro-batches and hosts before dividing."""
    targets, weights = targets_and_weights(family, batch)
    loss, correct = cross_entropy(logits, targets, label_smoothing, z_loss)
    weight_sum = jnp.sum(weights)
    loss_sum = jnp.sum(loss * weights)
    metrics = {"loss_sum": loss_sum, "correct_sum": jnp.sum(correct * weights),
               "weight_sum": weight_sum}
    return loss_sum / jnp.maximum(weight_sum, 1.0), metrics


# ---------------------------------------------------------------------------------------------
# Chunked (fused) cross-entropy: the output projection and the loss together, a sequence chunk at
# a time, so the float32 [batch, length, vocab] logits never exist. Under differentiation the
# forward pass also forms each chunk's gradients (d hidden, d matrix, d bias): no chunk's logits
# are recomputed and none are kept for the backward pass.


def _chunk_logits(h_NxD: Array, matrix: Array, bias: Array | None, vocab_axis: int) -> Array:
    # 2-D matmuls throughout: contracting over (batch, chunk) pairs made XLA:CPU copy every
    # chunk's [vocab, batch, chunk] gradient into a new layout first.
    spec = "nd,vd->nv" if vocab_axis == 0 else "nd,dv->nv"
    logits = jnp.einsum(spec, h_NxD, matrix.astype(h_NxD.dtype),
                        preferred_element_type=jnp.float32)
    return logits if bias is None else logits + bias.astype(jnp.float32)


def _chunk_loss(logits: Array, targets: Array, weights: Array, label_smoothing: float,
                z_loss: float) -> tuple[Array, Array, Array, Array]:
    """(weighted loss sum, weighted correct sum, log Z) of one chunk's float32 logits."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    loss = log_z - target_logit
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss + label_smoothing * (
            log_z - jnp.mean(logits, axis=-1))
    if z_loss:
        loss = loss + z_loss * jnp.square(log_z)
    # "The target has the largest logit": a plain max reduction, which vectorises on CPU where
    # argmax's two-operand reduction does not (the two differ only on exact ties).
    correct = (target_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(correct * weights), log_z


def _chunks(x: Array, chunk: int) -> Array:
    """[B, L, ...] -> [L / chunk, B, chunk, ...]: each chunk keeps every batch row, so a batch
    sharded over devices stays sharded inside every step of the scan."""
    b, length = x.shape[:2]
    return jnp.swapaxes(x.reshape(b, length // chunk, chunk, *x.shape[2:]), 0, 1)


def _unchunk(x: Array) -> Array:
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def default_chunk(batch: int, length: int, vocab: int, budget: int | None = None) -> int:
    """The largest divisor of `length` whose float32 logits chunk [batch, chunk, vocab] stays
    within `budget` elements. Default: 2**23 (32 MiB) on CPU, where cache-sized tiles are fast;
    2**28 (1 GiB) on accelerators, whose matmuls need thousands of rows per chunk to run at speed
    and whose scan steps each cost a launch."""
    if budget is None:
        budget = 2 ** 23 if jax.default_backend() == "cpu" else 2 ** 28
    best = 1
    for c in range(1, length + 1):
        if length % c == 0 and batch * c * vocab <= budget:
            best = c
    return best


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _fused_sums(hidden, matrix, bias, targets, weights, vocab_axis, label_smoothing, z_loss,
                chunk):
    def body(carry, xs):
        h, t, w = (x.reshape(-1, *x.shape[2:]) for x in xs)
        loss, correct, _ = _chunk_loss(_chunk_logits(h, matrix, bias, vocab_axis), t, w,
                                       label_smoothing, z_loss)
        return (carry[0] + loss, carry[1] + correct), None

    zero = jnp.zeros((), jnp.float32)
    (loss, correct), _ = jax.lax.scan(
        body, (zero, zero), (_chunks(hidden, chunk), _chunks(targets, chunk),
                             _chunks(weights, chunk)))
    return loss, correct


def _fused_fwd(hidden, matrix, bias, targets, weights, vocab_axis, label_smoothing, z_loss,
               chunk):
    vocab = matrix.shape[vocab_axis]
    m = matrix.astype(hidden.dtype)

    def body(carry, xs):
        loss_sum, correct_sum, d_matrix, d_bias = carry
        shape = xs[0].shape
        h, t, w = (x.reshape(-1, *x.shape[2:]) for x in xs)
        logits = _chunk_logits(h, matrix, bias, vocab_axis)
        loss, correct, log_z = _chunk_loss(logits, t, w, label_smoothing, z_loss)
        # d loss / d logits = softmax * (1 + 2 z log Z) - (1 - s) onehot - s / V, times the weight.
        probs = jnp.exp(logits - log_z[..., None]) * (1.0 + 2.0 * z_loss * log_z)[..., None]
        onehot = jax.nn.one_hot(t, vocab, dtype=jnp.float32)
        d_logits = (probs - (1.0 - label_smoothing) * onehot - label_smoothing / vocab)
        d_logits = (d_logits * w[..., None]).astype(hidden.dtype)
        if vocab_axis == 0:
            d_h = jnp.einsum("nv,vd->nd", d_logits, m, preferred_element_type=jnp.float32)
            d_m = jnp.einsum("nv,nd->vd", d_logits, h, preferred_element_type=jnp.float32)
        else:
            d_h = jnp.einsum("nv,dv->nd", d_logits, m, preferred_element_type=jnp.float32)
            d_m = jnp.einsum("nd,nv->dv", h, d_logits, preferred_element_type=jnp.float32)
        if bias is not None:
            d_bias = d_bias + jnp.sum(d_logits.astype(jnp.float32), axis=0)
        carry = (loss_sum + loss, correct_sum + correct, d_matrix + d_m, d_bias)
        return carry, d_h.astype(hidden.dtype).reshape(shape)

    zero = jnp.zeros((), jnp.float32)
    init = (zero, zero, jnp.zeros(matrix.shape, jnp.float32),
            None if bias is None else jnp.zeros(bias.shape, jnp.float32))
    (loss, correct, d_matrix, d_bias), d_hidden = jax.lax.scan(
        body, init, (_chunks(hidden, chunk), _chunks(targets, chunk), _chunks(weights, chunk)))
    grads = (_unchunk(d_hidden), d_matrix.astype(matrix.dtype),
             None if bias is None else d_bias.astype(bias.dtype))
    return (loss, correct), (grads, targets, weights)


def _fused_bwd(vocab_axis, label_smoothing, z_loss, chunk, residuals, cotangents):
    (d_hidden, d_matrix, d_bias), targets, weights = residuals
    g = cotangents[0]  # the correct count has no gradient
    scale = lambda x: None if x is None else (x * g).astype(x.dtype)
    return (scale(d_hidden), scale(d_matrix), scale(d_bias),
            np.zeros(targets.shape, jax.dtypes.float0), jnp.zeros_like(weights))


_fused_sums.defvjp(_fused_fwd, _fused_bwd)


def fused_weighted_loss(family: str, hidden_BxLxD: Array, matrix: Array, bias: Array | None,
                        batch: Mapping[str, Array], *, vocab_axis: int = 0,
                        label_smoothing: float = 0.0, z_loss: float = 0.0,
                        chunk: int | None = None) -> tuple[Array, dict]:
    """`weighted_loss` of the logits `hidden @ matrix (+ bias)` without materialising them.

    `matrix` is [vocab, d_model] (a tied embedding, vocab_axis=0) or [d_model, vocab]
    (vocab_axis=1). `chunk` sequence positions (all batch rows) are projected at a time; the
    default keeps each float32 logits chunk near 32 MiB.
    """
    targets, weights = targets_and_weights(family, batch)
    b, length = targets.shape
    chunk = chunk or default_chunk(b, length, matrix.shape[vocab_axis])
    if length % chunk:
        raise ValueError(f"The loss chunk {chunk} must divide the sequence length {length}.")
    loss_sum, correct_sum = _fused_sums(hidden_BxLxD, matrix, bias, targets, weights,
                                        vocab_axis, float(label_smoothing), float(z_loss), chunk)
    weight_sum = jnp.sum(weights)
    metrics = {"loss_sum": loss_sum, "correct_sum": correct_sum, "weight_sum": weight_sum}
    return loss_sum / jnp.maximum(weight_sum, 1.0), metrics
