"""Train state and the pure, sharded train and eval steps."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
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


def state_initializer(model: nn.Module, optimizer: optax.GradientTransformation,
                      example_batch: Batch, mesh: Mesh,
                      rules: sharding.Rules = sharding.DEFAULT_RULES,
                      ) -> tuple[Callable[[int], TrainState], Any]:
    """(seed -> a train state initialised straight into its shardings, the state shardings),
    compiled once: callers that start many states of one set-up (fine-tuning, one per k-shot
    subset) pay for one compile.

    The optimizer state is built from the unboxed params (Adafactor's factored moments have
    fewer dimensions than their parameter's logical axes); sharding.optimizer_state_axes then
    gives each moment the axes of its parameter that it keeps, so it shards the same way.
    """
    def init(key: Array) -> TrainState:
        init_key, dropout_key = jax.random.split(key)
        params = init_params(model, init_key, example_batch)
        opt_state = optimizer.init(sharding.unbox_values(params))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=sharding.optimizer_state_axes(opt_state, params),
                          rng=jax.random.key_data(dropout_key))

    init_sharded, shardings = sharding.sharded_initializer(init, jax.random.key(0), mesh, rules)
    return (lambda seed: init_sharded(jax.random.key(seed))), shardings


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation, seed: int,
                       example_batch: Batch, mesh: Mesh,
                       rules: sharding.Rules = sharding.DEFAULT_RULES) -> tuple[TrainState, Any]:
    """A train state initialised straight into its shardings; returns (state, state_shardings).
    See `state_initializer`."""
    init, shardings = state_initializer(model, optimizer, example_batch, mesh, rules)
    return init(seed), shardings


def _wide(dtype: Any) -> Any:
    """`dtype`, at least float32: the dtype gradients are added and divided in."""
    return jnp.promote_types(dtype, jnp.float32)


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
    logits never exist; otherwise the output head's logits are formed and the loss reads them.
    A batch with next-sentence labels, on a model with a classifier head, adds NSP_SUMS."""
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
    if model.cfg.classifier_classes and NSP_FEATURES[0] in batch:
        sums.update(nsp_sums(model.apply({"params": params}, hidden, method=classifier_logits),
                             batch))
    return sums


# (params, batch, dropout key | None) -> {loss_sum, correct_sum, weight_sum}; None: deterministic.
LossFn = Callable[[Any, Batch, Array | None], dict[str, Array]]


def lm_loss(model: nn.Module, *, label_smoothing: float = 0.0, z_loss: float = 0.0,
            fused_loss: bool = True) -> LossFn:
    """The language-model loss of `model` (`loss_sums`) as a LossFn for the shared step."""
    def loss_fn(params: Any, batch: Batch, key: Array | None = None) -> dict[str, Array]:
        return loss_sums(model, params, batch, deterministic=key is None,
                         rngs=None if key is None else {"dropout": key},
                         label_smoothing=label_smoothing, z_loss=z_loss, fused_loss=fused_loss)
    return loss_fn


def train_step(state: TrainState, batch: Batch, *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation, optim_cfg: OptimConfig,
               micro_batches: int = 1) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer update. Gradients of the summed losses are added over micro-batches and
    divided by the total loss weight, which is exactly the large batch's mean-loss gradient."""
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    # A next-sentence term is a mean over examples: its factor comes from the whole batch, so
    # that micro-batches add up to the same gradient (see losses.nsp_loss_scale).
    nsp_scale = nsp_loss_scale(batch) if NSP_FEATURES[1] in batch else None

    def loss_sum(params: Any, micro: Batch, key: Array) -> tuple[Array, dict]:
        sums = loss_fn(params, micro, key)
        if nsp_scale is not None and NSP_SUMS[0] in sums:
            return sums["loss_sum"] + sums[NSP_SUMS[0]] * nsp_scale, sums
        return sums["loss_sum"], sums

    grad_fn = jax.grad(loss_sum, has_aux=True)
    if micro_batches == 1:
        grads, sums = grad_fn(state.params, batch, step_key)
    else:
        def accumulate(carry, micro_and_index):
            micro, index = micro_and_index
            grads, sums = grad_fn(state.params, micro, jax.random.fold_in(step_key, index))
            return jax.tree.map(lambda c, x: c + x.astype(c.dtype), carry, (grads, sums)), None

        micros = _split_micro_batches(batch, micro_batches)
        # The sums this loss returns (NSP adds some), each a zero to accumulate into.
        sums_shape = jax.eval_shape(loss_fn, state.params,
                                    jax.tree.map(lambda x: x[0], micros), step_key)
        # Gradients add up in float32 (or wider) whatever the parameters' dtype: bfloat16 sums
        # of many micro-batches would round away the later ones' contributions.
        zeros = (jax.tree.map(lambda p: jnp.zeros(p.shape, _wide(p.dtype)), state.params),
                 jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape))
        (grads, sums), _ = jax.lax.scan(
            accumulate, zeros, (micros, jnp.arange(micro_batches)))
    weight = jnp.maximum(sums["weight_sum"], 1.0)
    # Divided in float32, then handed to the optimizer in the parameters' dtypes (its state keeps
    # its dtypes; optim.with_master_copy casts them up again for a float32 master copy).
    grads = jax.tree.map(lambda g, p: (g.astype(_wide(g.dtype)) / weight).astype(p.dtype),
                         grads, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": sums["loss_sum"] / weight, "accuracy": sums["correct_sum"] / weight,
               "tokens": sums["weight_sum"], "grad_norm": optax.global_norm(grads),
               "learning_rate": learning_rate_schedule(optim_cfg)(state.step)}
    if NSP_SUMS[0] in sums:  # next-sentence prediction, logged apart, per example
        nsp_weight = jnp.maximum(sums["nsp_weight_sum"], 1.0)
        metrics.update(nsp_loss=sums["nsp_loss_sum"] / nsp_weight,
                       nsp_accuracy=sums["nsp_correct_sum"] / nsp_weight)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module,
              fused_loss: bool = True) -> dict[str, Array]:
    """Summed loss, correct and weight over one batch (add over batches, then divide)."""
    return lm_loss(model, fused_loss=fused_loss)(params, batch)


def batch_rows_sharding(mesh: Mesh) -> NamedSharding:
    """Every batch feature split along its first (batch) axis over the data-parallel axes, so
    features of any rank ([B, L] tokens, [B] labels) share one sharding."""
    return NamedSharding(mesh, PartitionSpec(sharding.batch_sharding(mesh).spec[0]))


def _with_rules(fn: Callable, rules: sharding.Rules) -> Callable:
    """`fn` traced under `rules`, whatever rules the caller has in scope."""
    def traced(*args: Any) -> Any:
        with nn.logical_axis_rules(rules):
            return fn(*args)
    return traced


def jit_train_step(model: nn.Module, optim_cfg: OptimConfig, state_shardings: Any, mesh: Mesh,
                   micro_batches: int = 1, label_smoothing: float = 0.0, z_loss: float = 0.0,
                   fused_loss: bool = True, rules: sharding.Rules = sharding.DEFAULT_RULES, *,
                   loss_fn: LossFn | None = None) -> Callable:
    """train_step jitted with explicit in/out shardings and the state donated; the model's
    logical constraints resolve with `rules`. The loss is `model`'s LM loss (`lm_loss`) unless
    `loss_fn` is given (e.g. a classifier's)."""
    loss_fn = loss_fn or lm_loss(model, label_smoothing=label_smoothing, z_loss=z_loss,
                                 fused_loss=fused_loss)
    step = functools.partial(train_step, loss_fn=loss_fn, optimizer=make_optimizer(optim_cfg),
                             optim_cfg=optim_cfg, micro_batches=micro_batches)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(_with_rules(step, rules),
                   in_shardings=(state_shardings, batch_rows_sharding(mesh)),
                   out_shardings=(state_shardings, replicated), donate_argnums=0)


def jit_eval_step(loss_fn: LossFn, param_shardings: Any, mesh: Mesh,
                  rules: sharding.Rules = sharding.DEFAULT_RULES) -> Callable:
    """`loss_fn` without dropout, jitted over the mesh (under `rules`): summed loss, correct
    and weight, replicated (add them over batches, then divide)."""
    return jax.jit(_with_rules(lambda params, batch: loss_fn(params, batch, None), rules),
                   in_shardings=(param_shardings, batch_rows_sharding(mesh)),
                   out_shardings=NamedSharding(mesh, PartitionSpec()))
