"""The training loss: cross-entropy weighted by the objective's `*_loss_weights`.

The loss reads features only (targets and weights of the family's output stream), so it knows
nothing of which objective produced them. `token_loss` is the one definition of the per-token
loss and accuracy; the plain path (from logits) and the fused path (chunked projection) both call
it, and the fused path's gradient is that function's own vjp.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

Array = jax.Array

# The stream whose logits the model returns, per family: (targets, weights).
TARGET_FEATURES = {
    "decoder": ("decoder_target_tokens", "decoder_loss_weights"),
    "encoder": ("encoder_target_tokens", "encoder_loss_weights"),
    "encoder_decoder": ("decoder_target_tokens", "decoder_loss_weights"),
}


def token_loss(logits: Array, targets: Array, label_smoothing: float = 0.0,
               z_loss: float = 0.0) -> tuple[Array, Array]:
    """Per-position loss and correctness of logits [..., V] against int targets [...], float32.

    Loss: cross-entropy; with `label_smoothing` s the target mass is (1 - s) on the target and
    s spread uniformly over the vocabulary; `z_loss` adds z_loss * logsumexp(logits)^2 (PaLM /
    T5X), keeping the softmax normaliser near 1.
    Accuracy: correct means `argmax(logits) == target`, where argmax takes the first maximum (as
    jnp.argmax), so on a tie only the lowest tied id counts as correct.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    # A masked sum rather than a gather: its gradient is an elementwise select, not a scatter.
    is_target = jnp.arange(logits.shape[-1]) == targets[..., None]
    target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
    loss = log_z - target_logit
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss + label_smoothing * (
            log_z - jnp.mean(logits, axis=-1))
    if z_loss:
        loss = loss + z_loss * jnp.square(log_z)
    return loss, first_argmax(logits) == targets


def first_argmax(x: Array) -> Array:
    """jnp.argmax(x, axis=-1) for non-NaN x: the index of the first maximum, int32.

    Two single-output reductions (the max, then the lowest index holding it) instead of argmax's
    variadic (value, index) reduction, which XLA:CPU does not vectorise: on a [1024, 4096] logits
    tile the argmax took ~19 ms of a ~70 ms training step per device, this takes ~2 ms. A row with
    a NaN gives x.shape[-1], an index no target has.
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    size = x.shape[-1]
    return jnp.min(jnp.where(x == top, jnp.arange(size, dtype=jnp.int32), size), axis=-1)


def weighted_sums(loss: Array, correct: Array, weights: Array) -> dict[str, Array]:
    """(loss_sum, correct_sum, weight_sum): sums that add across micro-batches, batches and hosts
    before dividing by weight_sum."""
    weights = weights.astype(jnp.float32)
    return {"loss_sum": jnp.sum(loss * weights), "correct_sum": jnp.sum(correct * weights),
            "weight_sum": jnp.sum(weights)}


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


# Next-sentence prediction: the label at each example's [CLS] and where the [CLS]s are.
NSP_FEATURES = ("encoder_nsp_labels", "encoder_nsp_weights")
NSP_SUMS = ("nsp_loss_sum", "nsp_correct_sum", "nsp_weight_sum")


def nsp_sums(logits_BxLxC: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
    """`weighted_sums` of classification logits [B, L, C] against `encoder_nsp_labels` at the
    positions `encoder_nsp_weights` marks, under the NSP_SUMS names."""
    labels, weights = (batch[k] for k in NSP_FEATURES)
    sums = weighted_sums(*token_loss(logits_BxLxC, labels), weights)
    return dict(zip(NSP_SUMS, (sums["loss_sum"], sums["correct_sum"], sums["weight_sum"])))


def nsp_loss_scale(batch: Mapping[str, Array]) -> Array:
    """Masked-token weight / NSP weight of a whole batch: the factor on the summed NSP loss that
    makes a step's gradient that of mean token loss + mean NSP loss (BERT's sum of the two), as
    the step divides the summed gradient by the token weight. NSP batches are encoder batches."""
    _, weights = targets_and_weights("encoder", batch)
    nsp_weight = jnp.sum(batch[NSP_FEATURES[1]].astype(jnp.float32))
    return jnp.maximum(jnp.sum(weights), 1.0) / jnp.maximum(nsp_weight, 1.0)


def _mean(sums: dict[str, Array]) -> Array:
    return sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1.0)


def weighted_loss(family: str, logits: Array, batch: Mapping[str, Array],
                  label_smoothing: float = 0.0, z_loss: float = 0.0) -> tuple[Array, dict]:
    """Mean loss over weighted tokens, and the summed metrics of `weighted_sums`."""
    targets, weights = targets_and_weights(family, batch)
    sums = weighted_sums(*token_loss(logits, targets, label_smoothing, z_loss), weights)
    return _mean(sums), sums


# ---------------------------------------------------------------------------------------------
# Chunked (fused) cross-entropy: the output projection and the loss together, a sequence chunk at
# a time, so the float32 [batch, length, vocab] logits never exist. Under differentiation the
# forward pass also forms each chunk's gradients (d hidden, d matrix, d bias): no chunk's logits
# are recomputed and none are kept for the backward pass. Under a mesh the chunk loop runs per
# device on its own batch rows (shard_map over the batch axes), so the [vocab, d_model] gradient
# is a local sum inside the loop and crosses devices once, after it.


def _chunk_logits(h_NxD: Array, matrix: Array, bias: Array | None, vocab_axis: int) -> Array:
    # 2-D matmuls throughout: contracting over (batch, chunk) pairs made XLA:CPU copy every
    # chunk's [vocab, batch, chunk] gradient into a new layout first.
    spec = "nd,vd->nv" if vocab_axis == 0 else "nd,dv->nv"
    logits = jnp.einsum(spec, h_NxD, matrix.astype(h_NxD.dtype),
                        preferred_element_type=jnp.float32)
    return logits if bias is None else logits + bias.astype(jnp.float32)


def _chunks(x: Array, chunk: int) -> Array:
    """[B, L, ...] -> [L / chunk, B * chunk, ...]: each chunk keeps every (local) batch row."""
    b, length = x.shape[:2]
    x = jnp.swapaxes(x.reshape(b, length // chunk, chunk, *x.shape[2:]), 0, 1)
    return x.reshape(length // chunk, b * chunk, *x.shape[3:])


def _unchunk(x: Array, batch: int) -> Array:
    """Inverse of `_chunks` for a tensor of the hidden's shape."""
    x = x.reshape(x.shape[0], batch, x.shape[1] // batch, *x.shape[2:])
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape(batch, x.shape[1] * x.shape[2], *x.shape[3:])


def default_chunk(batch: int, length: int, vocab: int, budget: int | None = None) -> int:
    """The largest divisor of `length` whose float32 logits chunk [batch, chunk, vocab] stays
    within `budget` elements (`batch`: the rows one device holds). Default: 2**23 (32 MiB) on
    CPU, where cache-sized tiles are fast; 2**28 (1 GiB) on accelerators, whose matmuls need
    thousands of rows per chunk to run at speed and whose scan steps each cost a launch."""
    if budget is None:
        budget = 2 ** 23 if jax.default_backend() == "cpu" else 2 ** 28
    best = 1
    for c in range(1, length + 1):
        if length % c == 0 and batch * c * vocab <= budget:
            best = c
    return best


def _sums(hidden, matrix, bias, targets, weights, vocab_axis, label_smoothing, z_loss, chunk,
          axes):
    """(loss sum, correct sum) over chunks, without gradients."""
    def body(carry, xs):
        h, t, w = xs
        sums = weighted_sums(*token_loss(_chunk_logits(h, matrix, bias, vocab_axis), t,
                                         label_smoothing, z_loss), w)
        return (carry[0] + sums["loss_sum"], carry[1] + sums["correct_sum"]), None

    xs = tuple(_chunks(x, chunk) for x in (hidden, targets, weights))
    return jax.lax.scan(body, (_zeros((), axes), _zeros((), axes)), xs)[0]


_fused_sums = jax.custom_vjp(_sums, nondiff_argnums=(5, 6, 7, 8, 9))


def _zeros(shape: tuple[int, ...], axes: tuple[str, ...]) -> Array:
    """float32 zeros varying over the manual mesh `axes` (under shard_map a scan carry keeps the
    type of the values added to it)."""
    zeros = jnp.zeros(shape, jnp.float32)
    return jax.lax.pcast(zeros, axes, to="varying") if axes else zeros


def _fused_fwd(hidden, matrix, bias, targets, weights, vocab_axis, label_smoothing, z_loss,
               chunk, axes):
    m = matrix.astype(hidden.dtype)

    def body(carry, xs):
        loss_sum, correct_sum, d_matrix, d_bias = carry
        h, t, w = xs
        logits = _chunk_logits(h, matrix, bias, vocab_axis)
        # d loss_sum / d logits is token_loss's own vjp, seeded with the weights.
        loss, vjp, correct = jax.vjp(lambda x: token_loss(x, t, label_smoothing, z_loss),
                                     logits, has_aux=True)
        d_logits = vjp(w)[0].astype(hidden.dtype)
        if vocab_axis == 0:
            d_h = jnp.einsum("nv,vd->nd", d_logits, m, preferred_element_type=jnp.float32)
            d_m = jnp.einsum("nv,nd->vd", d_logits, h, preferred_element_type=jnp.float32)
        else:
            d_h = jnp.einsum("nv,dv->nd", d_logits, m, preferred_element_type=jnp.float32)
            d_m = jnp.einsum("nd,nv->dv", h, d_logits, preferred_element_type=jnp.float32)
        if bias is not None:
            d_bias = d_bias + jnp.sum(d_logits.astype(jnp.float32), axis=0)
        carry = (loss_sum + jnp.sum(loss * w), correct_sum + jnp.sum(correct * w),
                 d_matrix + d_m, d_bias)
        return carry, d_h.astype(hidden.dtype)

    init = (_zeros((), axes), _zeros((), axes), _zeros(matrix.shape, axes),
            None if bias is None else _zeros(bias.shape, axes))
    xs = tuple(_chunks(x, chunk) for x in (hidden, targets, weights))
    (loss, correct, d_matrix, d_bias), d_hidden = jax.lax.scan(body, init, xs)
    grads = (_unchunk(d_hidden, hidden.shape[0]), d_matrix.astype(matrix.dtype),
             None if bias is None else d_bias.astype(bias.dtype))
    return (loss, correct), (grads, targets, weights)


def _fused_bwd(vocab_axis, label_smoothing, z_loss, chunk, axes, residuals, cotangents):
    (d_hidden, d_matrix, d_bias), targets, weights = residuals
    g = cotangents[0]  # the correct count has no gradient
    scale = lambda x: None if x is None else (x * g).astype(x.dtype)
    return (scale(d_hidden), scale(d_matrix), scale(d_bias),
            np.zeros(targets.shape, jax.dtypes.float0), jnp.zeros_like(weights))


_fused_sums.defvjp(_fused_fwd, _fused_bwd)


def _batch_axes(batch: int) -> tuple[str, ...]:
    """The active mesh's axes that split the batch (the `activation_batch` rule), or () when
    there is no mesh or they do not divide `batch`."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    spec = nn.logical_to_mesh_axes(("activation_batch",))[0]
    axes = tuple(a for a in ((spec,) if isinstance(spec, str) else spec or ())
                 if a in mesh.shape and mesh.shape[a] > 1)
    if not axes or batch % int(np.prod([mesh.shape[a] for a in axes])):
        return ()
    return axes


def fused_weighted_loss(family: str, hidden_BxLxD: Array, matrix: Array, bias: Array | None,
                        batch: Mapping[str, Array], *, vocab_axis: int = 0,
                        label_smoothing: float = 0.0, z_loss: float = 0.0,
                        chunk: int | None = None) -> tuple[Array, dict]:
    """`weighted_loss` of the logits `hidden @ matrix (+ bias)` without materialising them.

    `matrix` is [vocab, d_model] (a tied embedding, vocab_axis=0) or [d_model, vocab]
    (vocab_axis=1). `chunk` sequence positions of every local batch row are projected at a time;
    the default (`default_chunk`) sizes the float32 logits tile from the rows one device holds.
    """
    targets, weights = targets_and_weights(family, batch)
    axes = _batch_axes(targets.shape[0])
    with_bias = bias is not None

    def local(h, t, w, m, *b):
        if axes:  # varying over the batch axes from here: its gradient is summed once, outside,
            # in float32 (XLA:CPU fails to compile that sum in bfloat16, for bfloat16 params)
            m, *b = [jax.lax.pcast(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axes,
                                   to="varying") for x in (m, *b)]
        length = t.shape[1]
        c = chunk or default_chunk(t.shape[0], length, m.shape[vocab_axis])
        if length % c:
            raise ValueError(f"The loss chunk {c} must divide the sequence length {length}.")
        sums = _fused_sums(h, m, b[0] if with_bias else None, t, w, vocab_axis,
                           float(label_smoothing), float(z_loss), c, axes)
        return jax.lax.psum(sums, axes) if axes else sums

    if axes:
        rows = PartitionSpec(axes)
        local = jax.shard_map(local, in_specs=(rows, rows, rows) + (PartitionSpec(),) * (
            1 + with_bias), out_specs=PartitionSpec(), axis_names=set(axes))
    loss_sum, correct_sum = local(hidden_BxLxD, targets, weights, matrix,
                                  *((bias,) if with_bias else ()))
    sums = {"loss_sum": loss_sum, "correct_sum": correct_sum, "weight_sum": jnp.sum(weights)}
    return _mean(sums), sums
