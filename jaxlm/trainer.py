"""The training loop: config -> pipeline -> sharded state -> steps -> metrics and checkpoints.

    summary = train(config, workdir)   # resumes from workdir's latest checkpoint if there is one

The loop never waits for the device inside a step: step n's metrics are read after step n+1 has
been dispatched (they are scalars that finished long ago), except on checkpoint steps, where the
metrics of the step are checked before its state is saved, so a saved state is never one whose
update was non-finite. A NaN or Inf loss or gradient norm stops the run (`TrainingDiverged`) and
leaves the last good checkpoint as it was. SIGTERM / SIGINT (Cloud TPU preemption) saves the
current step and returns with `stopped='preempted'`; rerunning the same command continues at the
next step, with the data iterator where it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlm import checkpoint as checkpoint_lib
from jaxlm import config as config_lib
from jaxlm import flops as flops_lib
from jaxlm import io
from jaxlm import metrics as metrics_lib
from jaxlm import sharding
from jaxlm.data.pipeline import Pipeline, to_global_arrays
from jaxlm.models import build_model, param_count
from jaxlm.optim import make_optimizer
from jaxlm.prefetch import Prefetcher
from jaxlm.train import create_train_state, jit_eval_step, jit_train_step, lm_loss

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm; the last good checkpoint is left intact."""


@dataclasses.dataclass
class TrainSummary:
    """What a run did; metrics.jsonl has the full curves."""

    workdir: str
    start_step: int
    final_step: int
    stopped: str  # done | preempted
    train: dict[str, float]  # the last logged train metrics
    eval: dict[str, float]  # the last evaluation (empty if none ran)
    params: int
    tokens_per_step: int  # sequence positions processed per step (encoder + decoder)
    flops_per_step: float  # model training FLOPs per step (jaxlm.flops)
    wall_seconds: float


@dataclasses.dataclass
class _Context:
    """What the loop's helpers share."""

    run: config_lib.RunConfig
    mesh: Any
    model: Any
    pipeline: Pipeline
    writer: metrics_lib.MetricsWriter
    say: Callable[[str], None]
    rows: slice  # the rows of the input shard's batches this process keeps
    peak: float | None  # the devices' combined peak FLOP/s behind MFU; None: unknown


def resolved_config_dict(config: ml_collections.ConfigDict,
                         run: config_lib.RunConfig) -> dict[str, Any]:
    """The config as given, with every value the run derived filled in (model fields from the
    preset, family, vocab size, the schedule horizon): what WORKDIR/config.json holds."""
    resolved = config.to_dict()
    resolved["model"] = {"preset": config.model.preset, **dataclasses.asdict(run.model)}
    resolved["optim"]["total_steps"] = run.optim.total_steps
    return resolved


def stream_lengths(pipeline: Pipeline) -> dict[str, int]:
    """{'encoder': L, 'decoder': L'}: the batch's stream lengths for this objective."""
    return {s.prefix: s.length for s in pipeline.layout.streams}


def _flops_per_example(cfg: Any, lengths: dict[str, int]) -> float:
    if cfg.family == "encoder_decoder":
        return flops_lib.training_flops(cfg, lengths["encoder"], lengths["decoder"])
    return flops_lib.training_flops(cfg, lengths["encoder" if cfg.family == "encoder" else
                                                "decoder"])


def _gather_data_states(state: dict[str, Any]) -> dict[str, Any]:
    """Every process's iterator state, keyed by process index (process 0 writes the JSON)."""
    if jax.process_count() == 1:
        return {"0": state}
    from jax.experimental import multihost_utils

    blob = json.dumps(state).encode()
    if len(blob) > 4096:
        raise ValueError(f"data iterator state of {len(blob)} bytes exceeds 4096")
    buffer = np.zeros(4096, np.uint8)
    buffer[: len(blob)] = np.frombuffer(blob, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buffer))
    return {str(i): json.loads(bytes(row).rstrip(b"\0")) for i, row in enumerate(rows)}


class _PreemptionSignal:
    """SIGTERM / SIGINT seen by this process (one process), or JAX's preemption sync point, which
    every process reaches at the same step (several processes: jax.distributed's coordination
    service catches the signal, so no Python handler may replace its own)."""

    def __init__(self) -> None:
        self._watcher = (checkpoint_lib.PreemptionWatcher() if jax.process_count() == 1
                         else None)
        self.signal_name = "preemption"

    def requested(self, step: int) -> bool:
        if self._watcher is not None:
            if self._watcher.requested:
                self.signal_name = self._watcher.signal_name or self.signal_name
            return self._watcher.requested
        from jax.experimental import multihost_utils
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # no preemption service (jax.distributed not initialised)
            return False

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.restore_handlers()


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = [k for k in ("loss", "grad_norm") if not np.isfinite(metrics.get(k, 0.0))]
    if bad:
        raise TrainingDiverged(
            f"step {step}: {' and '.join(f'{k}={metrics[k]}' for k in bad)}; stopping. The last "
            "checkpoint before it is intact: lower optim.learning_rate, raise "
            "optim.warmup_steps or set optim.grad_clip_norm, then rerun from it.")


def evaluate(ctx: _Context, fn: Any, params: Any) -> dict[str, float]:
    """Loss and accuracy over `train.eval_batches` validation batches (the same every time)."""
    totals = None
    with sharding.activate(ctx.mesh, ctx.run.rules):
        for local in ctx.pipeline.eval_batches(num_batches=ctx.run.train.eval_batches):
            sums = fn(params, to_global_arrays(_local_rows(local, ctx.rows), ctx.mesh))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    weight = float(totals["weight_sum"])
    if weight == 0:
        raise ValueError(f"data.eval_split={ctx.run.data.eval_split!r} gave no target tokens in "
                         f"{ctx.run.train.eval_batches} batches")
    result = {"loss": float(totals["loss_sum"]) / weight,
              "accuracy": float(totals["correct_sum"]) / weight, "tokens": weight}
    if "nsp_weight_sum" in totals:  # next-sentence prediction, per example
        examples = max(float(totals["nsp_weight_sum"]), 1.0)
        result.update(nsp_loss=float(totals["nsp_loss_sum"]) / examples,
                      nsp_accuracy=float(totals["nsp_correct_sum"]) / examples)
    return result


def input_shard(run: config_lib.RunConfig) -> tuple[int, int, slice]:
    """(this process's input shard, the shard count, the rows of the shard's batches it keeps).

    `data.shards` S must divide the process count P: P / S processes read each shard and each
    keeps its own consecutive rows, so the global batch is the same for any P when S is fixed.
    """
    processes, index = jax.process_count(), jax.process_index()
    shards = processes if run.data.shards == -1 else run.data.shards
    if processes % shards:
        raise config_lib.ConfigError(
            f"data.shards={run.data.shards} is invalid: expected a divisor of the {processes} "
            "processes, or -1 (one shard per process)")
    if run.train.batch_size % processes:
        raise config_lib.ConfigError(
            f"train.batch_size={run.train.batch_size} is invalid: expected a multiple of the "
            f"{processes} processes")
    sharing = processes // shards
    rows = run.train.batch_size // processes
    offset = (index % sharing) * rows
    return index // sharing, shards, slice(offset, offset + rows)


def _local_rows(batch: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in batch.items()}


def setup(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
          ) -> tuple[config_lib.RunConfig, Any, Pipeline]:
    """The checked run config, its mesh and its input pipeline; ConfigError on a bad value (the
    dataset, the mesh against the device count, ...), before anything is compiled."""
    run = config_lib.resolve(config)
    try:
        mesh = sharding.make_mesh(*run.mesh, devices=devices, dcn_data=run.dcn[0],
                                  dcn_fsdp=run.dcn[1])
        shard, shards, _ = input_shard(run)
        pipeline = Pipeline(run.data, objective=run.objective, family=run.model.family,
                            global_batch_size=run.train.batch_size,
                            objective_kwargs=run.objective_options, process_index=shard,
                            process_count=shards)
    except ValueError as error:
        raise config_lib.ConfigError(str(error)) from None
    if pipeline.vocab.vocab_size > run.model.vocab_size:
        raise config_lib.ConfigError(
            f"model.vocab_size={run.model.vocab_size} is invalid: expected at least the "
            f"vocabulary's {pipeline.vocab.vocab_size} ids")
    return run, mesh, pipeline


def train(config: ml_collections.ConfigDict, workdir: str, *,
          devices: Sequence[jax.Device] | None = None,
          say: Callable[[str], None] = print,
          loop_transfer_guard: str = "allow") -> TrainSummary:
    """Trains (or resumes) the run `config` in `workdir`; see the module docstring.

    Config errors raise ConfigError before anything is compiled. `devices` defaults to all
    devices of all processes; `say` receives the console lines (process 0 only);
    `loop_transfer_guard='disallow'` makes any implicit host<->device transfer inside the step
    loop an error (jax.transfer_guard), which is how the tests prove the loop has none.
    """
    wall_start = time.perf_counter()
    run, mesh, pipeline = setup(config, devices)
    # Timed on CPU before the input pipeline's threads start, which would slow the matmul down
    # (metrics.py keeps the process's best timing).
    peak = metrics_lib.mesh_peak_flops(mesh.devices, run.train.peak_flops)
    if jax.process_index() != 0:
        say = lambda line: None  # noqa: E731 - one console per run
    io.makedirs(workdir)  # a no-op on gs://, where directories are object-name prefixes
    io.write_shared_text(io.join(workdir, "config.json"),
                         json.dumps(resolved_config_dict(config, run), indent=2, sort_keys=True))

    model = build_model(run.model)
    optimizer = make_optimizer(run.optim)
    example = jax.device_put(pipeline.zero_batch(1))  # explicit: no implicit transfer
    state, state_shardings = create_train_state(model, optimizer, run.seed, example, mesh,
                                                run.rules)
    checkpointer = checkpoint_lib.Checkpointer(workdir, keep=run.checkpoint.keep,
                                               async_save=run.checkpoint.async_save)
    iterator, start_step = pipeline.iterator(), 0
    if checkpointer.latest_step() is not None:
        target = checkpoint_lib.abstract_like(state, state_shardings)
        del state  # restored into the same shardings: never two copies of the state
        start_step, state, data_states = checkpointer.restore(target, run.model)
        mine = data_states.get(str(jax.process_index()))
        if mine is not None:
            iterator.set_state(mine)
            say(f"resumed from step {start_step} of {checkpointer.directory} "
                f"(data at batch {mine['batches']})")
        else:
            say(f"resumed from step {start_step}; no data position for process "
                f"{jax.process_index()}: the data restarts from the beginning")
    ctx = _Context(run, mesh, model, pipeline, metrics_lib.MetricsWriter(workdir), say,
                   input_shard(run)[2], peak)
    try:
        return _loop(ctx, state, state_shardings, iterator, checkpointer, start_step, workdir,
                     wall_start, loop_transfer_guard)
    finally:
        iterator.close()
        checkpointer.close()
        ctx.writer.close()


def _loop(ctx: _Context, state: Any, state_shardings: Any, iterator: Any,
          checkpointer: checkpoint_lib.Checkpointer, start_step: int, workdir: str,
          wall_start: float, transfer_guard: str) -> TrainSummary:
    run, say = ctx.run, ctx.say
    steps, log_every = run.train.steps, run.train.log_every
    lengths = stream_lengths(ctx.pipeline)
    batch_size = run.train.batch_size
    tokens_per_step = batch_size * sum(lengths.values())
    flops_per_step = batch_size * _flops_per_example(run.model, lengths)
    params = param_count(state.params)
    summary = TrainSummary(workdir, start_step, start_step, "done", {}, {}, params,
                           tokens_per_step, float(flops_per_step), 0.0)
    if start_step >= steps:
        say(f"{workdir} is already at step {start_step} >= train.steps={steps}; nothing to do")
        summary.wall_seconds = time.perf_counter() - wall_start
        return summary
    say(f"{run.objective} on a {run.model.family} of {params:,} params | mesh "
        f"{dict(ctx.mesh.shape)} | batch {batch_size} x {lengths} | steps {start_step}->{steps}")

    step_fn = jit_train_step(ctx.model, run.optim, state_shardings, ctx.mesh,
                             micro_batches=run.train.micro_batches,
                             label_smoothing=run.train.label_smoothing, z_loss=run.train.z_loss,
                             rules=run.rules)
    peak = ctx.peak
    eval_fn = jit_eval_step(lm_loss(ctx.model), state_shardings.params, ctx.mesh, run.rules)
    watcher = _PreemptionSignal()
    pending: tuple[int, Any] | None = None
    timer = {"time": None, "step": start_step}
    compile_seconds = None

    def handle(step: int, device_metrics: Any) -> None:
        """Reads one step's metrics, logs them and stops on non-finite values. Only log,
        checkpoint and evaluation steps are read: a NaN between two log steps reaches the
        parameters and shows in the next read loss, before anything is saved."""
        nonlocal compile_seconds
        metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        finite = all(np.isfinite(metrics[k]) for k in ("loss", "grad_norm"))
        if finite and step % log_every and step != steps:
            return  # read before a save or an evaluation: only its finiteness matters
        now = time.perf_counter()
        if timer["time"] is not None and step > timer["step"]:
            seconds = (now - timer["time"]) / (step - timer["step"])
            metrics["tokens_per_second"] = tokens_per_step / seconds
            if peak is not None:
                metrics["mfu"] = flops_per_step / seconds / peak
        timer.update(time=now, step=step)
        if compile_seconds is not None:  # the first record: what MFU divides by, once
            metrics["compile_seconds"], compile_seconds = compile_seconds, None
            if peak is not None:
                metrics["peak_flops"] = peak
        metrics["target_tokens"] = metrics.pop("tokens")
        ctx.writer.write(step, "train", metrics)
        summary.train = metrics
        say(metrics_lib.progress_line(step, steps, metrics, now - loop_start, start_step))
        _check_finite(step, metrics)  # after logging it: the record shows what went wrong

    def save(step: int, force: bool = False) -> None:
        # The position after the last batch a step consumed (the prefetcher reads ahead).
        checkpointer.save(step, state, _gather_data_states(data_state), run.model, force=force)

    # Batches are read, packed and placed on the devices by a thread, two steps ahead.
    batches = Prefetcher(iterator, lambda local: to_global_arrays(
        _local_rows(local, ctx.rows), ctx.mesh), depth=2)
    with sharding.activate(ctx.mesh, ctx.run.rules):
        batch, data_state = next(batches)
        compile_start = time.perf_counter()
        compiled = step_fn.lower(state, batch).compile()
        compile_seconds = time.perf_counter() - compile_start
        say(f"compiled the train step in {compile_seconds:.1f}s" + (
            f"; MFU against a peak of {peak / 1e9:,.0f} GFLOP/s" if peak is not None else ""))
        loop_start = time.perf_counter()
        timer["time"] = loop_start
        step = start_step
        try:
            with jax.transfer_guard(transfer_guard):
                while step < steps:
                    if step > start_step:
                        batch, data_state = next(batches)
                    state, device_metrics = compiled(state, batch)
                    step += 1
                    # Step n-1's metrics are read after step n is dispatched, and only on log
                    # steps: between them the host never waits for the device.
                    if pending is not None:
                        handle(*pending)
                        pending = None
                    evaluate_now = bool(run.train.eval_every) and step % run.train.eval_every == 0
                    save_now = step % run.checkpoint.every_steps == 0 or step == steps
                    if save_now or evaluate_now or step == steps:
                        handle(step, device_metrics)  # saved or evaluated only once finite
                    elif step % log_every == 0:
                        pending = (step, device_metrics)
                    if save_now:
                        save(step)
                    if evaluate_now or step == steps:
                        summary.eval = evaluate(ctx, eval_fn, state.params)
                        ctx.writer.write(step, "eval", summary.eval)
                        say(f"eval at step {step}: loss {summary.eval['loss']:.4f} | "
                            f"acc {summary.eval['accuracy']:.3f}")
                    if step < steps and watcher.requested(step):
                        if pending is not None:
                            handle(*pending)
                            pending = None
                        handle(step, device_metrics)
                        save(step, force=True)
                        checkpointer.wait()
                        say(f"{watcher.signal_name}: saved step {step} to "
                            f"{checkpointer.directory}; rerun the same command to continue")
                        summary.stopped = "preempted"
                        break
        finally:
            watcher.close()
            batches.close()
    summary.final_step = step
    summary.wall_seconds = time.perf_counter() - wall_start
    return summary
