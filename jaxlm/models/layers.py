"""Dense layers, embeddings, norms and MLPs. Every parameter carries logical axis names.

Logical names used for parameters: vocab, embed, heads, kv_heads, kv (head dim), mlp, token_types,
norm, relpos_buckets; scanned stacks add `layers`. sharding.py maps them onto the device mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.models.config import ModelConfig

Array = jax.Array
Axes = tuple[str | None, ...]

ACTIVATION_FNS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "silu": nn.silu,
}


def kernel_init(cfg: ModelConfig, scale: float = 1.0) -> nn.initializers.Initializer:
    """Kernel initializer: normal(init_std) (GPT-2, BERT) or T5's fan-in variance scaling."""
    if cfg.init == "normal":
        return nn.initializers.normal(stddev=cfg.init_std * scale ** 0.5)
    return nn.initializers.variance_scaling(scale, "fan_in", "normal")


def constrain(x: Array, axes: Axes) -> Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh with rules)."""
    return nn.with_logical_constraint(x, axes)


def dense_kernel(module: nn.Module, in_shape: tuple[int, ...], features: tuple[int, ...],
                 axes: Axes, cfg: ModelConfig, init_scale: float = 1.0) -> Array:
    """`module`'s param "kernel" [*in_shape, *features], initialised as a 2-D matrix so that the
    fan-in counts all contracted axes."""
    init = kernel_init(cfg, init_scale)

    def init_kernel(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
        flat = init(key, (int(np.prod(in_shape)), int(np.prod(features))), dtype)
        return flat.reshape(shape)

    return module.param("kernel", nn.with_logical_partitioning(init_kernel, axes),
                        tuple(in_shape) + tuple(features), cfg.weight_dtype)


class Kernel(nn.Module):
    """Just a DenseGeneral's kernel (same name, init and axes), for callers that apply it
    themselves (the chunked loss applies the output projection)."""

    in_shape: Sequence[int]
    features: Sequence[int]
    kernel_axes: Axes
    cfg: ModelConfig

    @nn.compact
    def __call__(self) -> Array:
        return dense_kernel(self, tuple(self.in_shape), tuple(self.features), self.kernel_axes,
                            self.cfg)


class DenseGeneral(nn.Module):
    """A dense layer contracting the trailing `num_in` axes of x into `features`."""

    features: Sequence[int]
    kernel_axes: Axes
    cfg: ModelConfig
    num_in: int = 1
    use_bias: bool | None = None
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = tuple(self.features)
        kernel = dense_kernel(self, x.shape[-self.num_in:], features, self.kernel_axes, self.cfg,
                              self.init_scale)
        dtype = self.cfg.compute_dtype
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        # One 2-D matmul [tokens, in] x [in, out] (the reshapes are free): with the batch and
        # length axes kept apart, XLA:CPU's weight gradient (a contraction over both) ran 1.13x
        # slower in the MLP's forward + backward. The leading axis keeps the batch's sharding.
        leading = x.shape[:x.ndim - self.num_in]
        y = jnp.dot(x.reshape(-1, int(np.prod(x.shape[x.ndim - self.num_in:]))),
                    kernel.reshape(-1, int(np.prod(features))))
        y = y.reshape(*leading, *features)
        use_bias = self.cfg.use_bias if self.use_bias is None else self.use_bias
        if use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                     self.kernel_axes[-len(features):]),
                features, self.cfg.weight_dtype)
            y = y + bias.astype(dtype)
        return y


class Embed(nn.Module):
    """A lookup table [num, d_model]; `attend` reuses it as the output projection (tied logits)."""

    num_embeddings: int
    cfg: ModelConfig
    axes: Axes = ("vocab", "embed")
    init_std: float | None = None

    def setup(self) -> None:
        std = self.cfg.embed_init_std if self.init_std is None else self.init_std
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(stddev=std), self.axes),
            (self.num_embeddings, self.cfg.d_model), self.cfg.weight_dtype)

    def __call__(self, ids: Array) -> Array:
        # FSDP: gather the table's embed axis before the lookup, so the output can be sharded
        # over the batch without resharding the gathered rows.
        table = constrain(self.embedding, (self.axes[0], None))
        return jnp.take(table, ids, axis=0).astype(self.cfg.compute_dtype)

    def attend(self, x: Array) -> Array:
        dtype = self.cfg.compute_dtype
        return jnp.einsum("...d,vd->...v", x.astype(dtype), self.embedding.astype(dtype))


class Norm(nn.Module):
    """LayerNorm or RMSNorm (T5's LayerNorm without mean and bias), computed in float32."""

    cfg: ModelConfig
    eps: float | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.cfg
        eps = cfg.norm_eps if self.eps is None else self.eps
        x32 = x.astype(jnp.float32)
        if cfg.norm == "layernorm":
            x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                           (x.shape[-1],), cfg.weight_dtype)
        y = y * scale.astype(jnp.float32)
        if cfg.norm == "layernorm" and cfg.norm_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
                              (x.shape[-1],), cfg.weight_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(cfg.compute_dtype)


class Mlp(nn.Module):
    """Position-wise feed-forward: act(x W_i) W_o, or the gated act(x W_i0) * (x W_i1) W_o."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        cfg = self.cfg
        act = ACTIVATION_FNS[cfg.mlp_activation]
        if cfg.mlp_gated:
            h = act(DenseGeneral((cfg.d_ff,), ("embed", "mlp"), cfg, name="wi_0")(x))
            h = h * DenseGeneral((cfg.d_ff,), ("embed", "mlp"), cfg, name="wi_1")(x)
        else:
            h = act(DenseGeneral((cfg.d_ff,), ("embed", "mlp"), cfg, name="wi")(x))
        h = constrain(h, ("activation_batch", "activation_length", "activation_mlp"))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return DenseGeneral((cfg.d_model,), ("mlp", "embed"), cfg, name="wo")(h)
