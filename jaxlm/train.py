"""Train state and the pure, sharded train and eval steps."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm import sharding
from jaxlm.losses import (NSP_FEATURES, NSP_SUMS, fused_weighted_loss, nsp_loss_scale, nsp_sums,
                          weighted_loss)
from jaxlm.models import init_params
from jaxlm.models.transformer import classifier_logits, head_projection, output_logits
from jaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer

Array = jax.Array
Batch = Mapping[str, Array]


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; the step's dropout key is fold_in(rng, step)."""

    step: Array
    params: Any
    opt_state: Any
    rng: Array


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation, seed: int,
                       example_batch: Batch, mesh: Mesh,
                       rules: sharding.Rules = sharding.DEFAULT_RULES) -> tuple[TrainState, Any]:
    """A train state initialised straight into its shardings; returns (state, state_shardings).

    The optimizer state is built from the unboxed params (Adafactor's factored moments have
    fewer dimensions than their parameter's logical axes); sharding.optimizer_state_axes then
    gives each moment the axes of its parameter that it keeps, so it shards the same way.
    """
    init_key, dropout_key = jax.random.split(jax.random.key(seed))

    def init() -> TrainState:
        params = init_params(model, init_key, example_batch)
        opt_state = optimizer.init(sharding.unbox_values(params))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=sharding.optimizer_state_axes(opt_state, params),
                          rng=jax.random.key_data(dropout_key))

    return sharding.init_sharded(init, mesh, rules)


def _split_micro_batches(batch: Batch, num: int) -> Batch:
    """[B, ...] -> [num, B / num, ...], taking every num-th example so that every data-parallel
    shard contributes to every micro-batch."""
    def split(x: Array) -> Array:
        if x.shape[0] % num:
            raise ValueError(f"train.micro_batches={num} must divide the batch size {x.shape[0]}.")
        return jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1)
    return {k: split(v) for k, v in batch.items()}


def loss_sums(model: nn.Module, params: Any, batch: Batch, *, deterministic: bool = True,
              rngs: dict | None = None, label_smoothing: float = 0.0, z_loss: float = 0.0,
              fused_loss: bool = True) -> dict[str, Array]:
    """Summed loss, correct and weight of one batch. `fused_loss` projects to the vocabulary
    inside the chunked loss (losses.fused_weighted_loss), so the float32 [batch, length, vocab]
    logits never exist; otherwise the model returns the logits and the loss reads them."""
    hidden = model.apply({"params": params}, batch, deterministic=deterministic, rngs=rngs,
                         return_hidden=True)
    if not fused_loss:
        logits = model.apply({"params": params}, hidden, method=output_logits)
        sums = weighted_loss(model.cfg.family, logits, batch, label_smoothing, z_loss)[1]
    else:
        features, matrix, bias = model.apply({"params": params}, hidden, method=head_projection)
        _, sums = fused_weighted_loss(model.cfg.family, features, matrix, bias, batch,
                                      vocab_axis=0 if model.cfg.tie_embeddings else 1,
                                      label_smoothing=label_smoothing, z_loss=z_loss)
    if uses_nsp(model, batch):
        sums.update(nsp_sums(model.apply({"params": params}, hidden, method=classifier_logits),
                             batch))
    return sums


def uses_nsp(model: nn.Module, batch: Batch) -> bool:
    """Whether the batch carries next-sentence labels and the model a head to predict them."""
    return bool(model.cfg.classifier_classes) and NSP_FEATURES[0] in batch


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               optimizer: optax.GradientTransformation, optim_cfg: OptimConfig,
               micro_batches: int = 1, label_smoothing: float = 0.0,
               z_loss: float = 0.0, fused_loss: bool = True) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer update. Gradients of the summed token losses are added over micro-batches
    and divided by the total loss weight, which is exactly the large batch's mean-loss gradient."""
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    nsp = uses_nsp(model, batch)
    # The NSP term is a mean over examples: scaled by the whole batch's weights (see losses).
    nsp_scale = nsp_loss_scale(model.cfg.family, batch) if nsp else None

    def loss_sum(params: Any, micro: Batch, key: Array) -> tuple[Array, dict]:
        sums = loss_sums(model, params, micro, deterministic=False, rngs={"dropout": key},
                         label_smoothing=label_smoothing, z_loss=z_loss, fused_loss=fused_loss)
        total = sums["loss_sum"] + (sums["nsp_loss_sum"] * nsp_scale if nsp else 0.0)
        return total, sums

    grad_fn = jax.grad(loss_sum, has_aux=True)
    if micro_batches == 1:
        grads, sums = grad_fn(state.params, batch, step_key)
    else:
        def accumulate(carry, micro_and_index):
            micro, index = micro_and_index
            grads, sums = grad_fn(state.params, micro, jax.random.fold_in(step_key, index))
            return jax.tree.map(jnp.add, carry, (grads, sums)), None

        keys = ("loss_sum", "correct_sum", "weight_sum") + (NSP_SUMS if nsp else ())
        zeros = jax.tree.map(jnp.zeros_like, (state.params, {k: jnp.zeros(()) for k in keys}))
        (grads, sums), _ = jax.lax.scan(
            accumulate, zeros, (_split_micro_batches(batch, micro_batches),
                                jnp.arange(micro_batches)))
    weight = jnp.maximum(sums["weight_sum"], 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": sums["loss_sum"] / weight, "accuracy": sums["correct_sum"] / weight,
               "tokens": sums["weight_sum"], "grad_norm": optax.global_norm(grads),
               "learning_rate": learning_rate_schedule(optim_cfg)(state.step)}
    if nsp:
        nsp_weight = jnp.maximum(sums["nsp_weight_sum"], 1.0)
        metrics.update(nsp_loss=sums["nsp_loss_sum"] / nsp_weight,
                       nsp_accuracy=sums["nsp_correct_sum"] / nsp_weight)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module,
              fused_loss: bool = True) -> dict[str, Array]:
    """Summed loss, correct and weight over one batch (add over batches, then divide)."""
    return loss_sums(model, params, batch, fused_loss=fused_loss)


def jit_train_step(model: nn.Module, optim_cfg: OptimConfig, state_shardings: Any, mesh: Mesh,
                   micro_batches: int = 1, label_smoothing: float = 0.0, z_loss: float = 0.0,
                   fused_loss: bool = True, rules: sharding.Rules = sharding.DEFAULT_RULES):
    """train_step jitted with explicit in/out shardings and the state donated; the model's
    logical constraints resolve with `rules`."""
    step = functools.partial(train_step, model=model, optimizer=make_optimizer(optim_cfg),
                             optim_cfg=optim_cfg, micro_batches=micro_batches,
                             label_smoothing=label_smoothing, z_loss=z_loss,
                             fused_loss=fused_loss)

    def step_with_rules(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
        with nn.logical_axis_rules(rules):  # traced here, whatever rules the caller has in scope
            return step(state, batch)

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step_with_rules, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated), donate_argnums=0)
