"""Position information: sinusoidal tables, rotary embeddings and T5's relative position bias.

Learned absolute positions are an `Embed` table (see transformer.py).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.models.config import ModelConfig

Array = jax.Array


def sinusoidal(positions_BxL: Array, d_model: int, max_timescale: float = 10000.0) -> Array:
    """The Transformer's fixed sin/cos encoding of integer positions: [B, L] -> [B, L, d_model]."""
    half = d_model // 2
    inv_freq = jnp.exp(-math.log(max_timescale) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
    angles = positions_BxL.astype(jnp.float32)[..., None] * inv_freq
    table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if d_model % 2:
        table = jnp.pad(table, [(0, 0)] * (table.ndim - 1) + [(0, 1)])
    return table


# Tables of at most this many angles (positions x D/2) are built with numpy, at trace time.
_MAX_CONSTANT_ANGLES = 1 << 20


def rotary_angles(positions_BxL: Array | None, length: int, head_dim: int,
                  base: float) -> tuple[Array, Array]:
    """(sin, cos) of the rotary angles, float32 [B, L, 1, D/2] ([1, L, 1, D/2] for positions
    0..L-1 in every row, `positions_BxL=None`): computed once per stack, shared by its layers.

    Left to XLA, sin and cos are fused into each consumer of the rotation (forward and backward,
    query and key, every layer) and recomputed per element there: on CPU that was ~4% of a
    training step. Implicit positions give numpy tables, constants of the compiled program;
    explicit ones are computed in the graph once, behind an optimization barrier.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (np.arange(half, dtype=np.float32) * 2.0 / head_dim))
    if positions_BxL is None and length * half <= _MAX_CONSTANT_ANGLES:
        angles = np.arange(length, dtype=np.float32)[None, :, None, None] * inv_freq
        return jnp.asarray(np.sin(angles)), jnp.asarray(np.cos(angles))
    if positions_BxL is None:
        positions_BxL = jnp.arange(length)[None]
    angles = positions_BxL.astype(jnp.float32)[:, :, None, None] * inv_freq
    return jax.lax.optimization_barrier((jnp.sin(angles), jnp.cos(angles)))


def apply_rotary(x_BxLxHxD: Array, angles: tuple[Array, Array]) -> Array:
    """Rotary position embedding (RoFormer), rotating the two halves of each head's features
    by `angles`, the (sin, cos) pair of `rotary_angles`."""
    sin, cos = angles
    half = x_BxLxHxD.shape[-1] // 2
    x = x_BxLxHxD.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x_BxLxHxD.dtype)


def relative_position_bucket(relative_position: Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
    """T5's bucketing of (key - query) offsets: exact for small offsets, log-spaced up to max_distance."""
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # Offsets >= max_exact share log-spaced buckets; float32 math as in the reference.
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(
        max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """A learned scalar per (bucket, head), added to attention logits; one table per stack (T5)."""

    cfg: ModelConfig
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions_Q: Array, key_positions_K: Array) -> Array:
        cfg = self.cfg
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=cfg.embed_init_std
                                                                if cfg.init == "normal" else 1.0),
                                         ("relpos_buckets", "heads")),
            (cfg.relative_buckets, cfg.num_heads), cfg.weight_dtype)
        relative = key_positions_K[None, :] - query_positions_Q[:, None]
        buckets = relative_position_bucket(relative.astype(jnp.int32), self.bidirectional,
                                           cfg.relative_buckets, cfg.relative_max_distance)
        bias_QxKxH = jnp.take(table, buckets, axis=0)
        return jnp.transpose(bias_QxKxH, (2, 0, 1))[None].astype(jnp.float32)  # [1, H, Q, K]
