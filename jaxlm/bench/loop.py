"""Mode `loop`: the training loop's host overhead, the trainer's loop against the bare step.

Both sides run the same config's step (jaxlm.train.jit_train_step, the same state, mesh and
batches) for `warmup` untimed steps and then `steps` timed ones:

- `trainer`: jaxlm.trainer.train itself, for warmup + steps steps with checkpoints and
  evaluation only at the end. The window runs from the progress line of step `warmup` to that of
  the last step; both lines are said after their step's metrics have come back from the device,
  so the window holds exactly `steps` device steps and everything the loop does for them:
  reading the input pipeline, placing batches, dispatching, reading and logging metrics (at the
  config's train.log_every).
- `bare`: the same compiled step called `steps` times in a row on batches drawn from the same
  pipeline and placed on the devices beforehand, blocking once at the end: the device's own
  speed with no host work between steps.

`device_wait_fraction` = 1 - bare / trainer seconds per step: the share of each loop step in
which the device is not running the step, i.e. waits for the host. On CPU the "device" is the
host's own cores, so host work there also slows the step itself and is counted the same way.
The bare step is set up once; each round times it, then the trainer, then it again, and pairs
the trainer's seconds with the mean of the two bare runs, so that a shared machine's changing
load falls on both sides alike. The median of the rounds' fractions is reported.

Wall-clock time on a shared machine moves with the other processes' load, so each side's CPU
time (the process's user + system seconds, all threads) is measured over the same window too:
`host_cpu_ms_per_step` = trainer - bare CPU time per step is the host work the loop adds (on a
CPU backend, where the step itself is CPU time on both sides, it is robust to that load).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxlm import sharding, trainer
from jaxlm.data.pipeline import to_global_arrays
from jaxlm.models import build_model
from jaxlm.optim import make_optimizer
from jaxlm.train import create_train_state, jit_train_step

PROGRESS = re.compile(r"step (\d+)/\d+")


def clocks() -> np.ndarray:
    """(wall, process CPU) seconds: CPU time is every thread's user + system time."""
    return np.array([time.perf_counter(), time.process_time()])


def set_window(config: ml_collections.ConfigDict, steps: int, warmup: int) -> int:
    """Makes `config` run warmup + steps steps, with checkpoints and evaluation only at the end;
    returns warmup rounded up to a multiple of train.log_every (the window starts at a progress
    line). The learning-rate warm-up is cut to the run's length: it changes no step's cost."""
    log_every = config.train.log_every
    warmup = log_every * max(1, math.ceil(warmup / log_every))
    config.train.steps = warmup + steps
    config.train.eval_every = 0
    config.checkpoint.every_steps = warmup + steps
    config.optim.warmup_steps = min(config.optim.warmup_steps, warmup + steps)
    return warmup


def time_trainer(config: ml_collections.ConfigDict, warmup: int, workdir: str
                 ) -> tuple[np.ndarray, trainer.TrainSummary]:
    """((wall, CPU) seconds from the progress line of step `warmup` to that of the last step,
    summary)."""
    marks: dict[int, np.ndarray] = {}

    def say(line: str) -> None:
        match = PROGRESS.match(line)
        if match:
            marks[int(match.group(1))] = clocks()

    summary = trainer.train(config, workdir, say=say)
    last = config.train.steps
    if warmup not in marks or last not in marks:
        raise RuntimeError(f"the trainer logged steps {sorted(marks)}, not steps {warmup} and "
                           f"{last}: the loop window cannot be timed")
    return marks[last] - marks[warmup], summary


class BareStep:
    """The config's compiled step with its own state and the pipeline's first warmup + steps
    batches, all placed on the devices; `seconds()` times the timed batches' calls."""

    def __init__(self, config: ml_collections.ConfigDict, warmup: int) -> None:
        run, mesh, pipeline = trainer.setup(config)
        rows = trainer.input_shard(run)[2]
        model = build_model(run.model)
        example = jax.device_put(pipeline.zero_batch(1))
        self.state, shardings = create_train_state(model, make_optimizer(run.optim), run.seed,
                                                   example, mesh)
        step_fn = jit_train_step(model, run.optim, shardings, mesh,
                                 micro_batches=run.train.micro_batches,
                                 label_smoothing=run.train.label_smoothing,
                                 z_loss=run.train.z_loss)
        self.mesh = mesh
        iterator = pipeline.iterator()
        try:
            with sharding.activate(mesh):
                batches = [to_global_arrays({k: v[rows] for k, v in next(iterator).items()},
                                            mesh) for _ in range(run.train.steps)]
        finally:
            iterator.close()
        self.warmup, self.timed = batches[:warmup], batches[warmup:]
        with sharding.activate(mesh):
            self.compiled = step_fn.lower(self.state, batches[0]).compile()
        self._calls(self.warmup)

    def _calls(self, batches: list[Any]) -> None:
        with sharding.activate(self.mesh):
            for batch in batches:
                self.state, metrics = self.compiled(self.state, batch)
            jax.block_until_ready((self.state, metrics))

    def seconds(self) -> np.ndarray:
        """(wall, CPU) seconds for one call per timed batch, back to back, blocking after the
        last."""
        start = clocks()
        self._calls(self.timed)
        return clocks() - start


def loop_overhead(config: ml_collections.ConfigDict, steps: int, warmup: int, rounds: int
                  ) -> dict[str, Any]:
    """`rounds` rounds of bare, trainer, bare (see the module docstring); per side the median
    seconds per step. `config` is changed to run the window (set_window)."""
    warmup = set_window(config, steps, warmup)
    bare = BareStep(config, warmup)
    loop_rounds, bare_rounds = [], []  # [rounds, (wall, cpu)] seconds per step
    summary = None
    for _ in range(rounds):
        before = bare.seconds()
        with tempfile.TemporaryDirectory() as workdir:
            seconds, summary = time_trainer(config, warmup, workdir)
        loop_rounds.append(seconds / steps)
        bare_rounds.append((before + bare.seconds()) / 2 / steps)
    (loop_s, loop_cpu), (bare_s, bare_cpu) = np.array(loop_rounds).T, np.array(bare_rounds).T
    tokens = summary.tokens_per_step
    loop, bare = float(np.median(loop_s)), float(np.median(bare_s))
    side = lambda s, per_round, cpu: {"tokens_per_second": tokens / s, "step_ms": 1e3 * s,
                                      "rounds_step_ms": [round(1e3 * x, 3) for x in per_round],
                                      "cpu_ms_per_step": float(1e3 * np.median(cpu))}
    device = jax.devices()[0]
    return {
        "mode": "loop", "objective": config.objective, "family": config.model.family,
        "preset": config.model.preset, "batch_size": config.train.batch_size,
        "seq_len": config.data.seq_len, "tokens_per_step": tokens, "steps": steps,
        "warmup_steps": warmup, "log_every": config.train.log_every, "rounds": rounds,
        "platform": device.platform, "device": device.device_kind, "devices": jax.device_count(),
        "trainer": side(loop, loop_s, loop_cpu), "bare": side(bare, bare_s, bare_cpu),
        "host_overhead_ms_per_step": 1e3 * (loop - bare),
        "device_wait_fraction": float(np.median(1 - bare_s / loop_s)),
        "host_cpu_ms_per_step": float(1e3 * np.median(loop_cpu - bare_cpu)),
        "trainer_logged_tokens_per_second": summary.train.get("tokens_per_second"),
    }


def format_loop(result: dict[str, Any]) -> str:
    """The loop report as a few fixed-width lines."""
    lines = [f"{result['objective']} on a {result['family']} ({result['preset']}), batch "
             f"{result['batch_size']}, {result['tokens_per_step']:,} tokens/step, "
             f"{result['platform']} x{result['devices']}: {result['steps']} timed steps after "
             f"{result['warmup_steps']}, log every {result['log_every']}, {result['rounds']} "
             "round(s)",
             f"{'':14s} {'tokens/s':>10s} {'ms/step':>9s} {'CPU ms/step':>11s}  "
             "rounds (ms/step)"]
    for name in ("trainer", "bare"):
        r = result[name]
        lines.append(f"{name:14s} {r['tokens_per_second']:10,.0f} {r['step_ms']:9.2f} "
                     f"{r['cpu_ms_per_step']:11.2f}  "
                     + ", ".join(f"{x:.2f}" for x in r["rounds_step_ms"]))
    lines.append(f"host overhead {result['host_overhead_ms_per_step']:.2f} ms per step "
                 f"(wall), {result['host_cpu_ms_per_step']:.2f} ms of CPU time per step; the "
                 f"device waits for the host {100 * result['device_wait_fraction']:.1f}% of "
                 "each loop step (1 - bare / trainer, median of rounds)")
    return "\n".join(lines)


def run_loop(args: argparse.Namespace) -> dict[str, Any]:
    """The `loop` mode: --config with --set overrides, measured and printed."""
    config = args.config_dict  # loaded and overridden by the command line
    result = loop_overhead(config, args.steps, args.warmup, args.rounds)
    result["config"] = args.config
    print(json.dumps(result) if args.json else format_loop(result))
    return result
