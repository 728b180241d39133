"""Fused attention kernels called through Pallas: TPU splash attention.

Splash attention (jax.experimental.pallas.ops.tpu.splash_attention) is a flash-attention kernel
for TPUs: it never materialises the [B, N, L, L] logits and skips the blocks that a static mask
(causal) hides. It expresses jaxlm's masks as a static head mask (causal or full) and-ed with
segment ids: a query sees a key only when both carry the same id, with padding folded into
the ids (attention.kernel_segment_ids). It takes no additive bias and no dropout.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

Array = jax.Array

# The kernel tiles queries and keys in blocks that are multiples of the TPU's 128 lanes.
SPLASH_MIN_BLOCK = 128
# The largest tile tried first: 512 is MaxText's default block size for training.
_SPLASH_BLOCKS = (512, 256, 128)


def splash_unsupported(q_BxQxNxD: Array, k_BxKxGxD: Array, bias: Array | None, dropout: bool,
                       segment_ids_BxL: Array | None) -> str | None:
    """Why splash attention cannot compute this attention, or None when it can."""
    if bias is not None:
        return "it takes no additive attention bias (T5's relative positions)"
    if dropout:
        return "it has no attention dropout"
    if segment_ids_BxL is None:
        return ("its mask is padding + packing (+ causal) only, and this one is not (a prefix-LM "
                "batch, with decoder_causal_attention)")
    q_len, k_len = q_BxQxNxD.shape[1], k_BxKxGxD.shape[1]
    if q_len != k_len or q_len % SPLASH_MIN_BLOCK:
        return (f"its query and key lengths ({q_len}, {k_len}) must be equal multiples of "
                f"{SPLASH_MIN_BLOCK}")
    return None


def splash_attention(q_BxQxNxD: Array, k_BxKxGxD: Array, v_BxKxGxD: Array,
                     segment_ids_BxL: Array, scale: float, causal: bool) -> Array:
    """softmax(q k^T * scale) v through the splash kernel, masked by segment ids (+ causal).

    Grouped-query heads go in as they are: the kernel maps query head n to kv head
    n // (N // G), as the einsum kernel does, so keys and values are not repeated. Off TPU the
    kernel runs in Pallas' interpret mode (slow; for tests). Inside a mesh the call is
    shard_mapped over the batch (and heads, when the kv heads divide evenly), because the
    Pallas call itself cannot be partitioned by the compiler.
    """
    q = jnp.swapaxes(q_BxQxNxD * jnp.asarray(scale, q_BxQxNxD.dtype), 1, 2)  # [B, N, L, D]
    k, v = jnp.swapaxes(k_BxKxGxD, 1, 2), jnp.swapaxes(v_BxKxGxD, 1, 2)  # [B, G, L, D]
    ids = segment_ids_BxL.astype(jnp.int32)
    call = functools.partial(_splash_local, causal=causal)
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        batch_axes, head_axes = _mesh_axes(mesh, q.shape[1], k.shape[1])
        qkv = PartitionSpec(batch_axes, head_axes)
        call = jax.shard_map(call, mesh=mesh, in_specs=(qkv, qkv, qkv, PartitionSpec(batch_axes)),
                             out_specs=qkv, check_vma=False)
    return jnp.swapaxes(call(q, k, v, ids), 1, 2)


def _splash_local(q_BxNxLxD: Array, k_BxGxLxD: Array, v_BxGxLxD: Array, ids_BxL: Array,
                  causal: bool) -> Array:
    """The kernel on one device's shard: built for its head count, vmapped over the batch."""
    num_heads, length = q_BxNxLxD.shape[1], q_BxNxLxD.shape[2]
    block = next(b for b in _SPLASH_BLOCKS if length % b == 0)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    head_mask = (splash.CausalMask((length, length)) if causal
                 else splash.FullMask((length, length)))
    kernel = splash.make_splash_mha(splash.MultiHeadMask([head_mask] * num_heads),
                                    block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                    interpret=jax.default_backend() != "tpu")
    return jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=splash.SegmentIds(s, s)))(
        q_BxNxLxD, k_BxGxLxD, v_BxGxLxD, ids_BxL)


def _mesh_axes(mesh, num_heads: int, kv_heads: int):
    """Mesh axes of the batch and heads under the logical axis rules in scope. Heads stay whole
    unless both the query and the kv heads divide evenly over their axes."""
    batch_axes, head_axes = nn.logical_to_mesh_axes(("activation_batch", "activation_heads"))
    size = lambda axes: 1 if axes is None else functools.reduce(
        lambda n, a: n * mesh.shape[a], (axes,) if isinstance(axes, str) else axes, 1)
    if head_axes is not None and (num_heads % size(head_axes) or kv_heads % size(head_axes)):
        head_axes = None
    return batch_axes, head_axes
