"""Shared helpers for model tests: tiny configs, random batches, param init."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.conventions import FAMILIES  # noqa: F401  (parametrizes the tests)
from jaxlm.models import ModelConfig, build_model, dummy_batch, get_preset, init_params


def tiny(family: str, **changes) -> ModelConfig:
    """The tiny preset, unrolled (faster to compile on CPU), with overrides."""
    return get_preset("tiny", family).replace(**{"scan_layers": False, "d_ff": 128, **changes})


def random_batch(cfg: ModelConfig, batch_size: int = 2, length: int = 12,
                 decoder_length: int | None = None, seed: int = 0) -> dict[str, jax.Array]:
    """Random non-pad tokens (ids >= 3) for every input stream of cfg's family."""
    rng = np.random.default_rng(seed)
    shapes = dummy_batch(cfg, batch_size, length, decoder_length)
    return {k: jnp.asarray(rng.integers(3, cfg.vocab_size, v.shape), jnp.int32)
            for k, v in shapes.items()}


def make(cfg: ModelConfig, batch=None, seed: int = 0):
    """(model, unboxed params)."""
    model = build_model(cfg)
    params = nn.meta.unbox(init_params(model, jax.random.key(seed), batch))
    return model, params


def logits(model, params, batch, **kw) -> np.ndarray:
    return np.asarray(model.apply({"params": params}, batch, **kw))
