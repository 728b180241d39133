"""Mode `attention`: one attention layer's forward + backward, kernel by kernel.

Times jax.nn.dot_product_attention's cuDNN kernel with a full boolean mask and with only its
built-in causal mask (GPU only: skipped elsewhere, with a line saying so), and jaxlm's
`attention_kernel` with `auto` (on a causal and on a right-padded mask) and `xla` (the einsum).
Before timing, `auto` is checked against `xla` on both masks (max |diff| over the real queries).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.models.attention import attention_kernel, causal_mask

PADDED_KEYS = 3  # the padded mask hides the last keys of every row


def attention_flops(batch: int, length: int, heads: int, head_dim: int) -> int:
    """Forward + backward FLOPs of QK^T and PV over the full square (backward = 2x forward)."""
    return 3 * 4 * batch * length * length * heads * head_dim


def variants(mask: jax.Array, padded: jax.Array, scale: float, gpu: bool
             ) -> dict[str, Callable]:
    """name -> (q, k, v) -> attention output; the cuDNN ones only on a GPU."""
    found = {}
    if gpu:
        found["cudnn mask"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, mask=mask, implementation="cudnn")
        found["cudnn causal"] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, implementation="cudnn")
    found["jaxlm auto"] = lambda q, k, v: attention_kernel(q, k, v, mask, None, scale, "auto",
                                                           causal=True)
    found["jaxlm auto padded"] = lambda q, k, v: attention_kernel(q, k, v, padded, None, scale,
                                                                  "auto", causal=True)
    found["xla"] = lambda q, k, v: attention_kernel(q, k, v, mask, None, scale, "xla")
    return found


def run_attention(args: argparse.Namespace) -> dict:
    """The median of --repeats timed forward + backward calls per kernel, after one warm-up."""
    b, t, h, d = args.batch_size, args.seq_len, args.num_heads, args.head_dim
    dtype = jnp.dtype(args.dtype)
    q, k, v = (jax.random.normal(key, (b, t, h, d), dtype)
               for key in jax.random.split(jax.random.key(0), 3))
    mask = jnp.broadcast_to(causal_mask(jnp.arange(t), jnp.arange(t)), (b, 1, t, t))
    valid = jnp.ones((b, t), bool).at[:, -PADDED_KEYS:].set(False)
    padded = mask & valid[:, None, None, :]
    scale = d ** -0.5
    gpu = jax.devices()[0].platform == "gpu"
    result = {"mode": "attention", "shape": {"batch": b, "length": t, "heads": h, "head_dim": d},
              "dtype": args.dtype, "platform": jax.devices()[0].platform, "max_abs_diff": {},
              "results": {}}
    lines = [] if gpu else ["cuDNN kernels skipped: not a GPU"]
    for name, m in (("causal", mask), ("padded", padded)):
        want = attention_kernel(q, k, v, m, None, scale, "xla").astype(jnp.float32)
        got = attention_kernel(q, k, v, m, None, scale, "auto", causal=True).astype(jnp.float32)
        err = float(jnp.abs(got - want)[:, :-PADDED_KEYS].max())
        result["max_abs_diff"][name] = err
        lines.append(f"auto vs xla, {name} mask: max |diff| {err:.3g}")
    flops = attention_flops(b, t, h, d)
    for name, fn in variants(mask, padded, scale, gpu).items():
        grad = jax.jit(jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v).astype(jnp.float32)),
                                argnums=(0, 1, 2)))
        jax.block_until_ready(grad(q, k, v))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(grad(q, k, v))
            times.append(time.perf_counter() - start)
        seconds = float(np.median(times))
        result["results"][name] = {"ms": 1e3 * seconds, "tflops": flops / seconds / 1e12}
        lines.append(f"{name:18s} {1e3 * seconds:9.2f} ms  {flops / seconds / 1e12:7.2f} TFLOP/s "
                     "(full-square count)")
    print(json.dumps(result) if args.json else "\n".join(lines))
    return result
