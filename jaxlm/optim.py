"""Optimizers: AdamW and Adafactor with learning-rate schedules, weight-decay masks, clipping and
a float32 master copy of low-precision parameters."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "linear", "rsqrt", "constant", "wsd")
OPTIMIZERS = ("adamw", "adafactor")
MASTER_DTYPES = ("float32", "none")


@dataclasses.dataclass(frozen=True)
class AdafactorConfig:
    """Adafactor's settings (the `optim.adafactor` config section); the defaults are T5's (Mesh
    TensorFlow / t5x): factored second moments, no first moment, updates scaled by the
    parameters' RMS, so the learning rate is relative (T5: 1e-2 with the rsqrt schedule)."""

    multiply_by_parameter_scale: bool = True  # the update is relative to the parameter's RMS
    decay_rate: float = 0.8  # second-moment decay 1 - step^-decay_rate
    clipping_threshold: float = 1.0  # update RMS clipping per parameter block; 0 disables
    momentum: float | None = None  # first-moment EMA rate; None: none (T5)
    factored: bool = True  # factor the second moment of matrices into row and column means
    min_dim_size_to_factor: int = 128  # both of the two largest dimensions at least this size
    eps: float = 1e-30  # added to the squared gradient

    def __post_init__(self) -> None:
        if not 0.0 < self.decay_rate <= 1.0:
            _fail("adafactor.decay_rate", self.decay_rate, "a value in (0, 1]")
        if self.clipping_threshold < 0:
            _fail("adafactor.clipping_threshold", self.clipping_threshold,
                  "a non-negative number (0 disables)")
        if self.momentum is not None and not 0.0 <= self.momentum < 1.0:
            _fail("adafactor.momentum", self.momentum, "None or a value in [0, 1)")
        if not (isinstance(self.min_dim_size_to_factor, int) and self.min_dim_size_to_factor >= 1):
            _fail("adafactor.min_dim_size_to_factor", self.min_dim_size_to_factor,
                  "a positive integer")
        if not self.eps > 0:
            _fail("adafactor.eps", self.eps, "> 0")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer hyperparameters (the `optim` config section)."""

    name: str = "adamw"  # adamw | adafactor
    learning_rate: float = 3e-4  # peak learning rate
    schedule: str = "cosine"  # cosine | linear | rsqrt (T5) | constant | wsd (warmup-stable-decay)
    warmup_steps: int = 100
    total_steps: int = 1000  # the schedule's horizon (train.steps)
    final_lr_fraction: float = 0.1  # cosine / linear / wsd end at this fraction of the peak
    decay_fraction: float = 0.2  # wsd: the last fraction of steps that decays
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # decoupled; applied to kernels only (see decay_mask)
    decay_embeddings: bool = False
    grad_clip_norm: float = 1.0  # global-norm clipping; 0 disables
    adafactor: AdafactorConfig = AdafactorConfig()  # used when name == 'adafactor'
    # The optimizer updates a copy of the parameters in this dtype when some are stored in
    # another (model.param_dtype=bfloat16); "none": it updates the stored parameters directly.
    master_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            _fail("name", self.name, "one of " + ", ".join(OPTIMIZERS))
        if self.master_dtype not in MASTER_DTYPES:
            _fail("master_dtype", self.master_dtype, "one of " + ", ".join(MASTER_DTYPES))
        if self.schedule not in SCHEDULES:
            _fail("schedule", self.schedule, "one of " + ", ".join(SCHEDULES))
        if not self.learning_rate > 0:
            _fail("learning_rate", self.learning_rate, "a positive number")
        if self.warmup_steps < 0:
            _fail("warmup_steps", self.warmup_steps, "a non-negative integer")
        if self.total_steps <= 0:
            _fail("total_steps", self.total_steps, "a positive integer")
        if self.schedule not in ("rsqrt", "constant") and self.warmup_steps > self.total_steps:
            _fail("warmup_steps", self.warmup_steps, f"at most the {self.total_steps} total steps")
        for name in ("final_lr_fraction", "decay_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail(name, getattr(self, name), "a fraction in [0, 1]")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                _fail(name, getattr(self, name), "a value in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip_norm < 0 or self.eps <= 0:
            bad = ("weight_decay" if self.weight_decay < 0 else
                   "grad_clip_norm" if self.grad_clip_norm < 0 else "eps")
            _fail(bad, getattr(self, bad), "a non-negative number" if bad != "eps" else "> 0")


def _fail(field: str, value: Any, valid: str) -> None:
    raise ValueError(f"optim.{field}={value!r} is invalid: expected {valid}.")


def learning_rate_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup to the peak, then the configured decay."""
    peak, warmup = cfg.learning_rate, cfg.warmup_steps
    final = peak * cfg.final_lr_fraction
    decay_steps = max(cfg.total_steps - warmup, 1)
    if cfg.schedule == "rsqrt":
        # T5: constant through warmup, then 1/sqrt(step) (continuous at the end of warmup).
        return lambda step: peak * jax.lax.rsqrt(
            jnp.maximum(step, max(warmup, 1)).astype(jnp.float32) / max(warmup, 1))
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.final_lr_fraction)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, final, decay_steps)
    else:  # wsd: stable at the peak, then a linear decay over the last decay_fraction of steps
        decay = max(int(round(cfg.total_steps * cfg.decay_fraction)), 1)
        stable = max(decay_steps - decay, 0)
        after = optax.join_schedules([optax.constant_schedule(peak),
                                      optax.linear_schedule(peak, final, decay)], [stable])
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params: Any, decay_embeddings: bool = False) -> Any:
    """True for the weights that get weight decay: matrices, not norms, biases or (by default)
    embedding tables. Works on jaxlm's parameter names and on any tree of arrays."""

    def wants_decay(path: tuple[Any, ...], leaf: Any) -> bool:
        # Dict keys only: logical-axis boxes add an attribute step (`.value`) to the path.
        names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
        if names[-1] in ("bias", "scale", "output_bias"):
            return False
        if names[-1] == "embedding" or "relpos_bias" in names:
            return decay_embeddings
        return leaf.ndim >= 2

    return jax.tree_util.tree_map_with_path(wants_decay, params)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Clipping, then AdamW or Adafactor, each with decoupled, masked weight decay; all of it on
    a master copy of the parameters in `cfg.master_dtype` where they are stored in another."""
    optimizer = _core_optimizer(cfg)
    if cfg.master_dtype == "none":
        return optimizer
    return with_master_copy(optimizer, jnp.dtype(cfg.master_dtype))


def _core_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(cfg)
    if cfg.name == "adamw":
        core = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay,
                           mask=lambda p: decay_mask(p, cfg.decay_embeddings))
    else:
        core = adafactor(cfg.adafactor, schedule, cfg.weight_decay,
                         lambda p: decay_mask(p, cfg.decay_embeddings))
    if cfg.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), core)
    return core


def adafactor(cfg: AdafactorConfig, schedule: optax.Schedule, weight_decay: float = 0.0,
              mask: Any = None) -> optax.GradientTransformation:
    """optax.adafactor's chain, with the weight decay scaled by the learning rate (decoupled, as
    in AdamW: optax adds its weight_decay_rate * param unscaled, a 10% shrink per step at 0.1)."""
    parts = [optax.scale_by_factored_rms(cfg.factored, cfg.decay_rate, 0,
                                         cfg.min_dim_size_to_factor, cfg.eps)]
    if cfg.clipping_threshold > 0:
        parts.append(optax.clip_by_block_rms(cfg.clipping_threshold))
    if cfg.multiply_by_parameter_scale:
        parts.append(optax.scale_by_param_block_rms())
    if cfg.momentum is not None:
        parts.append(optax.ema(cfg.momentum, debias=False))
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay, mask))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


class MasterCopyState(NamedTuple):
    """`with_master_copy`'s state: the master parameters and the inner optimizer's state (built
    from the master, so its moments are in the master's dtype)."""

    master: Any
    inner: Any


def with_master_copy(inner: optax.GradientTransformation,
                     master_dtype: Any = jnp.float32) -> optax.GradientTransformation:
    """`inner` applied to a copy of the parameters in `master_dtype`, for parameters stored in a
    lower precision: a bfloat16 parameter (8 significant bits) would round away any update below
    2**-9 of its size, the master copy keeps it. Each step updates the master with the gradients
    cast to `master_dtype` and returns `master.astype(param.dtype) - param`, so that
    `optax.apply_updates` stores the rounded master.

    Parameters all in `master_dtype` need no copy: the state is then `inner`'s own, as without
    the wrapper (float32 runs and their checkpoints are unchanged).
    """
    master_dtype = jnp.dtype(master_dtype)

    def needs_master(params: Any) -> bool:  # dtypes are static, so this is decided at trace time
        return any(p.dtype != master_dtype for p in jax.tree.leaves(params))

    def init(params: Any) -> Any:
        if not needs_master(params):
            return inner.init(params)
        master = jax.tree.map(lambda p: p.astype(master_dtype), params)
        return MasterCopyState(master=master, inner=inner.init(master))

    def update(grads: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError("with_master_copy needs the parameters in update().")
        if not needs_master(params):
            return inner.update(grads, state, params)
        grads = jax.tree.map(lambda g: g.astype(master_dtype), grads)
        steps, inner_state = inner.update(grads, state.inner, state.master)
        master = optax.apply_updates(state.master, steps)
        # The difference is taken in master_dtype: in bfloat16 it would round again, and
        # param + update would miss the rounded master.
        updates = jax.tree.map(
            lambda m, p: m.astype(p.dtype).astype(master_dtype) - p.astype(master_dtype),
            master, params)
        return updates, MasterCopyState(master=master, inner=inner_state)

    return optax.GradientTransformation(init, update)
