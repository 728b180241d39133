"""The training loss: cross-entropy weighted by the objective's `*_loss_weights`.

The loss reads features only (targets and weights of the family's output stream), so it knows
nothing of which objective produced them.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

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
