"""Micro-benchmark of one attention layer's forward + backward on a GPU (docs/performance.md).

    python experiments/attention_micro.py  # B32 T1024 H12 D64 bf16; ~30 s on an H100

Times jax.nn.dot_product_attention's cuDNN kernel with a full boolean mask, with only its built-in
causal mask, and the einsum (xla) kernel of jaxlm.models.attention.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.models.attention import attention_kernel, causal_mask


def main(batch: int = 32, length: int = 1024, heads: int = 12, head_dim: int = 64) -> None:
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (batch, length, heads, head_dim), jnp.bfloat16)
               for key in keys)
    mask = jnp.broadcast_to(causal_mask(jnp.arange(length), jnp.arange(length)),
                            (batch, 1, length, length))
    valid = jnp.ones((batch, length), bool).at[:, -3:].set(False)
    padded = mask & valid[:, None, None, :]
    variants = {
        "cudnn mask": lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, mask=mask, implementation="cudnn"),
        "cudnn causal": lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, implementation="cudnn"),
        "jaxlm auto": lambda q, k, v: attention_kernel(q, k, v, mask, None, head_dim ** -0.5,
                                                      "auto", causal=True),
        "jaxlm auto padded": lambda q, k, v: attention_kernel(q, k, v, padded, None,
                                                             head_dim ** -0.5, "auto", causal=True),
        "xla": lambda q, k, v: attention_kernel(q, k, v, mask, None, head_dim ** -0.5, "xla"),
    }
    for m in (mask, padded):  # the cuDNN paths compute the einsum kernel's function
        want = attention_kernel(q, k, v, m, None, head_dim ** -0.5, "xla").astype(jnp.float32)
        got = attention_kernel(q, k, v, m, None, head_dim ** -0.5, "auto", causal=True)
        err = jnp.abs(got.astype(jnp.float32) - want)[:, :-3].max()
        print(f"auto vs xla, {'padded' if m is padded else 'causal'} mask: max |diff| {err:.3g}")
    flops = 3 * 4 * batch * length * length * heads * head_dim  # fwd + bwd, full square
    for name, fn in variants.items():
        step = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32)),
                                argnums=(0, 1, 2)))
        jax.block_until_ready(step(q, k, v))
        times = []
        for _ in range(20):
            start = time.perf_counter()
            jax.block_until_ready(step(q, k, v))
            times.append(time.perf_counter() - start)
        t = float(np.median(times))
        print(f"{name:18s} {t * 1e3:7.2f} ms  {flops / t / 1e12:6.1f} TFLOP/s (full-square count)")


if __name__ == "__main__":
    main()
