"""The train-step contenders behind `benchmark.py train` and `benchmark.py compile`.

Each contender is a `Contender`: a compiled step over its own state, timed in alternating rounds
in one process so that the machine's noise falls on every side alike. Contenders:

- `jaxlm`: the project's full train step (jaxlm.train.jit_train_step: loss, metrics, AdamW).
- `jaxlm-plain`: the same model with a plain optax step that materialises the float32 logits and
  takes optax's cross-entropy (the model's own forward + backward, no loss tricks).
- `hf` and `jaxlm-from-hf`: transformers' Flax models, in jaxlm.bench.hf_models.

Memory is XLA's own account of each compiled step (arguments + outputs - donated aliases + temps),
which isolates each contender inside one process.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlm import metrics, sharding
from jaxlm.models import ModelConfig, build_model, get_preset, init_params
from jaxlm.optim import OptimConfig, make_optimizer
from jaxlm.train import TrainState, create_train_state, jit_train_step

DEFAULT_PRESET = {"decoder": "gpt2", "encoder": "bert_base", "encoder_decoder": "t5_base"}


def bench_optim(steps: int) -> OptimConfig:
    """AdamW at a constant rate: every contender's optimizer (jaxlm's make_optimizer)."""
    return OptimConfig(learning_rate=1e-4, warmup_steps=0, total_steps=max(steps, 1),
                       schedule="constant")


def targets_key(cfg: ModelConfig) -> str:
    """The feature the family's loss reads its targets from."""
    return "encoder_target_tokens" if cfg.family == "encoder" else "decoder_target_tokens"


def model_config(args: Any) -> ModelConfig:
    """The preset with the command line's shape overrides; d_ff follows d_model (4x) unless given.
    Dropout is off: the benchmark times the arithmetic, not the random masks."""
    cfg = get_preset(args.preset or DEFAULT_PRESET[args.family or "decoder"],
                     None if args.preset in (None, "gpt2", "bert_base", "t5_base") else args.family)
    changes: dict[str, Any] = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0,
                               "scan_layers": args.scan, "dtype": args.dtype,
                               "attention_impl": args.attention}
    if args.remat is not None:
        changes["remat_policy"] = args.remat
    for name in ("d_model", "num_heads", "num_layers", "vocab_size", "d_ff"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.d_model is not None and args.d_ff is None:
        changes["d_ff"] = 4 * args.d_model
    changes["max_len"] = max(cfg.max_len, args.seq_len)
    return cfg.replace(**changes)


def random_batch(cfg: ModelConfig, batch_size: int, length: int, decoder_length: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Random non-pad tokens for the family's streams (targets and the shifted-right inputs)."""
    rng = np.random.default_rng(seed)
    draw = lambda n: rng.integers(3, cfg.vocab_size, (batch_size, n)).astype(np.int32)
    if cfg.family == "encoder":
        return {"encoder_input_tokens": draw(length), "encoder_target_tokens": draw(length)}
    targets = draw(decoder_length)
    batch = {"decoder_target_tokens": targets,
             "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0)))}
    if cfg.family == "encoder_decoder":
        batch["encoder_input_tokens"] = draw(length)
    return batch


def step_memory(compiled: Any) -> int | None:
    """Bytes live during one compiled step, from XLA's buffer assignment."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                   + m.temp_size_in_bytes)
    except Exception:  # some backends do not report it
        return None


@dataclasses.dataclass
class Contender:
    """A compiled step and its carried state; `run(n)` runs n steps and waits for the result."""

    name: str
    compiled: Any
    state: Any
    batch: Any
    compile_seconds: float
    memory_bytes: int | None
    times: list[float] = dataclasses.field(default_factory=list)
    page_faults: list[float] = dataclasses.field(default_factory=list)

    def run(self, steps: int) -> float:
        """Seconds per step over `steps` steps; the minor page faults per step go to
        `page_faults` (on CPU, XLA maps each step's temporaries afresh, so a step pays one
        fault per 4 KiB page of them: the cost behind the step-memory column)."""
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(steps):
            self.state, out = self.compiled(self.state, self.batch)
        jax.block_until_ready((self.state, out))
        seconds = (time.perf_counter() - start) / steps
        self.page_faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
                                / steps)
        return seconds


def compile_contender(name: str, fn: Callable, state: Any, batch: Any) -> Contender:
    """Compiles `fn` ahead of time for (state, batch), timing the compile."""
    start = time.perf_counter()
    compiled = fn.lower(state, batch).compile()
    seconds = time.perf_counter() - start
    return Contender(name, compiled, state, batch, seconds, step_memory(compiled))


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """`name:field=value,...` -> (name, changes); fields are ModelConfig fields or fused_loss."""
    name, _, assignments = text.partition(":")
    changes: dict[str, Any] = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        lowered = value.lower()
        changes[key] = (lowered == "true" if lowered in ("true", "false") else
                        int(value) if value.lstrip("-").isdigit() else value)
    return name, changes


def jaxlm_contender(cfg: ModelConfig, optim: OptimConfig, batch: dict, abstract: bool = False,
                    fused_loss: bool = True, name: str = "jaxlm") -> Contender:
    """The project's own sharded, donated train step over all local devices."""
    mesh = sharding.make_mesh(-1, 1, 1)
    model = build_model(cfg)
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    with sharding.activate(mesh):
        if abstract:  # compile-time measurement only: no parameter memory
            state_shardings = _abstract_state_shardings(model, optim, batch, mesh)
            state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                 *state_shardings)
            step = jit_train_step(model, optim, state_shardings[1], mesh, fused_loss=fused_loss)
        else:
            state, shardings = create_train_state(model, make_optimizer(optim), 0, batch, mesh)
            step = jit_train_step(model, optim, shardings, mesh, fused_loss=fused_loss)
        return compile_contender(name, step, state, batch)


def _abstract_state_shardings(model: nn.Module, optim: OptimConfig, batch: dict,
                              mesh: Any) -> tuple[Any, Any]:
    """(abstract unboxed train state, its shardings) without allocating any of it."""
    def init() -> TrainState:
        params = init_params(model, jax.random.key(0), batch)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=make_optimizer(optim).init(params),
                          rng=jax.random.key_data(jax.random.key(0)))

    abstract = jax.eval_shape(init)
    return sharding.unbox_values(abstract), sharding.tree_shardings(abstract, mesh)


def plain_step(apply_logits: Callable, targets_key: str, optimizer: optax.GradientTransformation
               ) -> Callable:
    """A plain optax step: logits, optax's mean cross-entropy, grads, update (state donated)."""

    def step(state, batch):
        params, opt_state = state

        def loss_fn(p):
            logits = apply_logits(p, batch)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), batch[targets_key]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=0)


def jaxlm_plain_contender(cfg: ModelConfig, optim: OptimConfig, batch: dict,
                          params: Any = None, model: Any = None, name: str = "jaxlm-plain"
                          ) -> Contender:
    """jaxlm's model (or the given one and params) with the plain optax step."""
    model = model or build_model(cfg)
    if params is None:
        params = jax.jit(lambda: init_params(model, jax.random.key(0), batch))()
    params = nn.meta.unbox(params)
    optimizer = make_optimizer(optim)
    fn = plain_step(lambda p, b: model.apply({"params": p}, b), targets_key(cfg), optimizer)
    return compile_contender(name, fn, (params, optimizer.init(params)), jax.device_put(batch))


def time_alternating(contenders: list[Contender], rounds: int, steps: int) -> list[float]:
    """One warm-up step each, then `rounds` rounds of `steps` steps per contender, the order
    rotating every round; each round's seconds per step is appended to the contender's times.
    On CPU the float32 matmul peak is measured in every round too; returns those peaks."""
    cpu = jax.devices()[0].platform == "cpu"
    peaks = []
    for c in contenders:
        c.run(1)
    for r in range(rounds):
        for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
            c.times.append(c.run(steps))
        if cpu:
            peaks.append(metrics.measure_matmul_peak())
    return peaks


