"""Attention masks, attention kernels and multi-head (grouped-query) attention with a KV cache.

A mask is boolean [batch, 1, query, key]: True where the query may attend to the key.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.models.config import ModelConfig
from jaxlm.models.kernels import splash_attention, splash_unsupported
from jaxlm.models.layers import DenseGeneral, constrain
from jaxlm.models.positions import apply_rotary

Array = jax.Array

# Masked logits get a large finite value, not -inf, so a query with no visible key (padding)
# yields a uniform average instead of NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def pairwise_mask(query_valid_BxQ: Array, key_valid_BxK: Array) -> Array:
    """[B, 1, Q, K]: both the query and the key are real tokens."""
    return query_valid_BxQ[:, None, :, None] & key_valid_BxK[:, None, None, :]


def segment_mask(query_segments_BxQ: Array, key_segments_BxK: Array) -> Array:
    """[B, 1, Q, K]: query and key belong to the same packed segment."""
    return query_segments_BxQ[:, None, :, None] == key_segments_BxK[:, None, None, :]


def causal_mask(query_positions_Q: Array, key_positions_K: Array) -> Array:
    """[1, 1, Q, K]: the key is not after the query."""
    return (key_positions_K[None, :] <= query_positions_Q[:, None])[None, None]


def bidirectional_prefix_mask(causal_attention_BxL: Array) -> Array:
    """[B, 1, L, L]: prefix-LM tokens (1 in decoder_causal_attention) see each other both ways."""
    prefix = causal_attention_BxL.astype(bool)
    return prefix[:, None, :, None] & prefix[:, None, None, :]


def self_attention_mask(valid_BxL: Array, segment_ids_BxL: Array | None, causal: bool,
                        causal_attention_BxL: Array | None = None) -> Array:
    """The full self-attention mask: padding, packing, causality and the prefix-LM exception."""
    mask = pairwise_mask(valid_BxL, valid_BxL)
    if segment_ids_BxL is not None:
        mask &= segment_mask(segment_ids_BxL, segment_ids_BxL)
    if causal:
        idx = jnp.arange(valid_BxL.shape[1])
        allowed = causal_mask(idx, idx)
        if causal_attention_BxL is not None:
            allowed = allowed | bidirectional_prefix_mask(causal_attention_BxL)
        mask &= allowed
    return mask


def kernel_segment_ids(valid_BxL: Array, segment_ids_BxL: Array | None) -> Array:
    """[B, L] int32: a self-attention mask's padding and packing as segment ids.

    Real tokens keep their packed segment id (1 when unpacked), padding gets 0. The kernel lets a
    query see a key only with the same id, so real tokens never see padding or another segment;
    padding queries see the other padding keys (their outputs are never used), which keeps every
    row of the mask non-empty, as the kernel requires.
    """
    ids = jnp.ones(valid_BxL.shape, jnp.int32) if segment_ids_BxL is None \
        else segment_ids_BxL.astype(jnp.int32)
    return jnp.where(valid_BxL, ids, 0)


def cross_attention_mask(query_valid_BxQ: Array, key_valid_BxK: Array,
                         query_segments_BxQ: Array | None,
                         key_segments_BxK: Array | None) -> Array:
    """Decoder-to-encoder mask: real tokens, and the same packed segment when packed."""
    mask = pairwise_mask(query_valid_BxQ, key_valid_BxK)
    if query_segments_BxQ is not None and key_segments_BxK is not None:
        mask &= segment_mask(query_segments_BxQ, key_segments_BxK)
    return mask


def platform() -> str:
    """The default backend's platform (cpu, gpu, tpu): what `auto` selects a kernel for."""
    return jax.default_backend()


def cudnn_eligible(q_BxQxNxD: Array, bias: Array | None) -> bool:
    """Whether cuDNN's fused attention applies: a GPU, 16-bit inputs, a head size it supports,
    and no learned bias (T5's relative bias wants its gradient, which the fused kernel's
    broadcast bias does not give for every shape)."""
    return (platform() == "gpu" and bias is None
            and q_BxQxNxD.dtype in (jnp.bfloat16, jnp.float16)
            and q_BxQxNxD.shape[-1] % 8 == 0 and q_BxQxNxD.shape[-1] <= 128)


def resolve_impl(impl: str, q_BxQxNxD: Array, bias: Array | None, dropout: bool,
                 k_BxKxGxD: Array | None = None, segment_ids_BxL: Array | None = None) -> str:
    """The kernel that runs. `auto` -> `splash` on TPU where splash applies (splash_unsupported),
    `dot_product` where cuDNN's kernel applies (and no attention dropout), else `xla`: on CPU
    the einsum is what jax.nn.dot_product_attention would run anyway. An explicit `splash` that
    cannot run is an error, not a silent fallback."""
    k_BxKxGxD = q_BxQxNxD if k_BxKxGxD is None else k_BxKxGxD
    if impl == "splash":
        reason = splash_unsupported(q_BxQxNxD, k_BxKxGxD, bias, dropout, segment_ids_BxL)
        if reason is not None:
            raise ValueError(f"model.attention_impl='splash' cannot run this attention: {reason}. "
                             "Use model.attention_impl='auto', which falls back to the einsum "
                             "kernel there.")
        return impl
    if impl != "auto":
        return impl
    if platform() == "tpu" and splash_unsupported(q_BxQxNxD, k_BxKxGxD, bias, dropout,
                                                  segment_ids_BxL) is None:
        return "splash"
    return "dot_product" if cudnn_eligible(q_BxQxNxD, bias) and not dropout else "xla"


def attention_kernel(q_BxQxNxD: Array, k_BxKxGxD: Array, v_BxKxGxD: Array, mask: Array | None,
                     bias: Array | None, scale: float, impl: str, dropout_rate: float = 0.0,
                     dropout_rng: Array | None = None, causal: bool = False,
                     segment_ids_BxL: Array | None = None) -> Array:
    """softmax(q k^T * scale + bias, masked) v with grouped-query heads (N query heads, G kv heads).

    `xla` is an explicit einsum; `dot_product` is jax.nn.dot_product_attention, with cuDNN's fused
    kernel on GPUs in 16-bit; `splash` is the TPU splash kernel (kernels.py); `auto` picks
    (resolve_impl). `causal` says that `mask` already contains the causal mask, which lets cuDNN
    and splash skip the blocks above the diagonal and the einsum skip the quarter of the scores
    that no query can see. `segment_ids_BxL` (kernel_segment_ids), given only for
    self-attention whose mask is padding + packing (+ causal), is that same mask in the form
    splash takes; without it splash does not apply. Attention dropout needs the explicit
    probabilities, so it uses `xla`.
    """
    batch, q_len = q_BxQxNxD.shape[:2]
    dropout = dropout_rate > 0.0 and dropout_rng is not None
    impl = resolve_impl(impl, q_BxQxNxD, bias, dropout, k_BxKxGxD, segment_ids_BxL)
    if impl == "splash":
        return splash_attention(q_BxQxNxD, k_BxKxGxD, v_BxKxGxD, segment_ids_BxL, scale, causal)
    if impl == "dot_product" and not dropout:
        if mask is not None:
            mask = jnp.broadcast_to(mask, (batch, 1, q_len, k_BxKxGxD.shape[1]))
        cudnn = cudnn_eligible(q_BxQxNxD, bias)
        bias = None if bias is None else bias.astype(q_BxQxNxD.dtype)
        fused = lambda m, is_causal: jax.nn.dot_product_attention(
            q_BxQxNxD, k_BxKxGxD, v_BxKxGxD, bias=bias, mask=m, scale=scale,
            is_causal=is_causal, implementation="cudnn" if cudnn else None)
        if not (cudnn and causal and mask is not None and q_len == k_BxKxGxD.shape[1]):
            return fused(mask, False)
        # A batch without padding or packing needs only cuDNN's built-in causal mask, which skips
        # the blocks above the diagonal and reads no [B, 1, L, L] bias; any other batch takes the
        # exact masked kernel. The test runs on the device (no host sync).
        plain = jnp.all(mask == causal_mask(jnp.arange(q_len), jnp.arange(q_len)))
        return jax.lax.cond(plain, lambda: fused(None, True), lambda: fused(mask, True))
    if causal and mask is not None and q_len == k_BxKxGxD.shape[1] and q_len % 2 == 0 \
            and q_len >= _CAUSAL_SPLIT_MIN_LENGTH:
        # Causal attention in two query halves: the first half cannot see the second half's
        # keys, so that quarter of the [Q, K] square is never computed (1.6x faster forward +
        # backward on CPU at length 256, with the layout change below). The mask stays exact.
        half = q_len // 2

        def part(index: int, queries: slice, keys: slice) -> Array:
            sub = lambda x: None if x is None else x[..., queries, keys]
            rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, index)
            return _einsum_attention(q_BxQxNxD[:, queries], k_BxKxGxD[:, keys],
                                     v_BxKxGxD[:, keys], sub(mask), sub(bias), scale,
                                     dropout_rate, rng)

        return jnp.concatenate([part(0, slice(0, half), slice(0, half)),
                                part(1, slice(half, None), slice(None))], axis=1)
    return _einsum_attention(q_BxQxNxD, k_BxKxGxD, v_BxKxGxD, mask, bias, scale, dropout_rate,
                             dropout_rng)


# Shorter causal sequences are not split: their two halves are too small to gain anything.
_CAUSAL_SPLIT_MIN_LENGTH = 128


def _einsum_attention(q_BxQxNxD: Array, k_BxKxGxD: Array, v_BxKxGxD: Array, mask: Array | None,
                      bias: Array | None, scale: float, dropout_rate: float,
                      dropout_rng: Array | None) -> Array:
    """The explicit attention einsums, with heads moved before the sequence axes first: XLA:CPU
    then runs the [Q, K] products as contiguous batched matmuls instead of copying the
    probabilities into new layouts (1.15x faster forward + backward); elsewhere the transposes
    are folded into the dots' layouts."""
    batch, q_len, num_heads, head_dim = q_BxQxNxD.shape
    kv_heads = k_BxKxGxD.shape[2]
    groups = num_heads // kv_heads
    k, v = jnp.swapaxes(k_BxKxGxD, 1, 2), jnp.swapaxes(v_BxKxGxD, 1, 2)  # [B, G, K, D]
    q = jnp.swapaxes(q_BxQxNxD, 1, 2)  # [B, N, Q, D]
    # Plain multi-head attention keeps 4-D einsums: a size-1 group axis makes XLA:CPU copy the
    # [B, N, Q, K] probabilities into new layouts several times per layer.
    if groups > 1:
        q = q.reshape(batch, kv_heads, groups, q_len, head_dim)
    g = "" if groups == 1 else "g"
    logits = jnp.einsum(f"bh{g}qd,bhkd->bh{g}qk", q, k,
                        preferred_element_type=jnp.float32) * scale
    if bias is not None:  # [1 or B, N, Q, K]
        logits = logits + (bias if groups == 1 else bias.reshape(
            bias.shape[0], kv_heads, groups, *bias.shape[2:]))
    if mask is not None:  # [B, 1, Q, K]
        logits = jnp.where(mask if groups == 1 else mask[:, :, None], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0 and dropout_rng is not None:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    out = jnp.einsum(f"bh{g}qk,bhkd->bh{g}qd", probs.astype(v.dtype), v)
    return jnp.swapaxes(out.reshape(batch, num_heads, q_len, head_dim), 1, 2)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with grouped-query heads, optional rotary positions and a KV cache.

    In decode mode self-attention writes this call's keys and values into the cache at
    `decode_index` and attends over the whole cache (the caller's mask hides future slots);
    cross-attention computes the encoder's keys and values once, when `inputs_kv` is given,
    and reads them from the cache on later steps (`inputs_kv=None`).
    """

    cfg: ModelConfig
    is_cross: bool = False
    causal: bool = False  # the mask is causal (a hint for fused kernels; the mask stays exact)

    @nn.compact
    def __call__(self, inputs_q: Array, inputs_kv: Array | None, mask: Array | None,
                 bias: Array | None = None, rotary: tuple[Array, Array] | None = None, *,
                 deterministic: bool = True, decode: bool = False,
                 decode_index: Array | None = None, segment_ids: Array | None = None) -> Array:
        """`rotary`: the (sin, cos) of positions.rotary_angles, rotating self-attention's
        queries and keys (None: no rotary positions).
        `segment_ids` [B, L]: self-attention's mask as kernel_segment_ids, for splash;
        None where the mask is anything else (prefix-LM, cross-attention, decoding). Splash
        never runs for cross-attention or decoding, even when configured."""
        cfg = self.cfg
        n, g, d = cfg.num_heads, cfg.kv_heads, cfg.head_size
        # T5 has no 1/sqrt(d) in the logits: it scales the query's init instead.
        q_scale = 1.0 if cfg.attention_logit_scale else d ** -1.0
        query = DenseGeneral((n, d), ("embed", "heads", "kv"), cfg, init_scale=q_scale,
                             name="query")(inputs_q)
        kv_proj = lambda name: DenseGeneral((g, d), ("embed", "kv_heads", "kv"), cfg, name=name)

        if self.is_cross and decode:
            key, value = self._cached_cross_kv(kv_proj, inputs_kv)
        else:
            source = inputs_q if inputs_kv is None else inputs_kv
            key, value = kv_proj("key")(source), kv_proj("value")(source)
            if rotary is not None and not self.is_cross:  # the queries' positions are the keys'
                query, key = apply_rotary(query, rotary), apply_rotary(key, rotary)
            if decode:
                key, value = self._update_cache(key, value, decode_index)

        query = constrain(query, ("activation_batch", "activation_length", "activation_heads",
                                  "activation_kv"))
        dropout_rng = None
        if not deterministic and cfg.attention_dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        impl = cfg.attention_impl
        if impl == "splash" and (self.is_cross or decode):
            # Splash covers self-attention over whole sequences; a model trained with it still
            # cross-attends and decodes from its cache, with `auto`'s choice among the others.
            impl = "auto"
        out = attention_kernel(query, key, value, mask, bias,
                               scale=d ** -0.5 if cfg.attention_logit_scale else 1.0,
                               impl=impl, dropout_rate=cfg.attention_dropout_rate,
                               dropout_rng=dropout_rng, causal=self.causal and not decode,
                               segment_ids_BxL=None if decode else segment_ids)
        out = constrain(out, ("activation_batch", "activation_length", "activation_heads",
                              "activation_kv"))
        return DenseGeneral((cfg.d_model,), ("heads", "kv", "embed"), cfg, num_in=2,
                            name="out")(out)

    def _update_cache(self, key: Array, value: Array, index: Array) -> tuple[Array, Array]:
        """Writes [B, L, G, D] keys/values at `index`; returns the whole cache."""
        # At init the call carries the full cache length; that shape sizes the cache.
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        if self.is_initializing():
            return key, value
        start = (0, index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        return cached_key.value, cached_value.value

    def _cached_cross_kv(self, kv_proj, inputs_kv: Array | None) -> tuple[Array, Array]:
        if inputs_kv is not None:
            key, value = kv_proj("key")(inputs_kv), kv_proj("value")(inputs_kv)
            cached_key = self.variable("cache", "cross_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable("cache", "cross_value", jnp.zeros, value.shape,
                                         value.dtype)
            cached_key.value, cached_value.value = key, value
            return key, value
        if not self.has_variable("cache", "cross_key"):
            raise ValueError("Cross-attention decoding needs the encoder output on the first step "
                             "(pass `encoded`) so its keys and values can be cached.")
        return (self.get_variable("cache", "cross_key"), self.get_variable("cache", "cross_value"))
