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
Rounds alternate the two sides; per-round fractions are paired and their median reported.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
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


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`path/to/config.py[:arg]` -> its get_config(arg), as pretrain.py's --config reads it."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("benchmark_loop_config", path)
    if module_spec is None:
        raise FileNotFoundError(f"--config {spec!r}: no Python file at {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, assignments: list[str]) -> None:
    """Sets each `section.field=value` (a Python literal, else the string)."""
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected section.field=value")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *sections, field = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[field] = value


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
                 ) -> tuple[float, trainer.TrainSummary]:
    """(seconds from the progress line of step `warmup` to that of the last step, summary)."""
    marks: dict[int, float] = {}

    def say(line: str) -> None:
        match = PROGRESS.match(line)
        if match:
            marks[int(match.group(1))] = time.perf_counter()

    summary = trainer.train(config, workdir, say=say)
    last = config.train.steps
    if warmup not in marks or last not in marks:
        raise RuntimeError(f"the trainer logged steps {sorted(marks)}, not steps {warmup} and "
                           f"{last}: the loop window cannot be timed")
    return marks[last] - marks[warmup], summary


def time_bare(config: ml_collections.ConfigDict, warmup: int) -> float:
    """Seconds for the last config.train.steps - warmup calls of the compiled step, every batch
    placed on the devices first, blocking only after the last call."""
    run, mesh, pipeline = trainer.setup(config)
    rows = trainer.input_shard(run)[2]
    model = build_model(run.model)
    example = jax.device_put(pipeline.zero_batch(1))
    state, shardings = create_train_state(model, make_optimizer(run.optim), run.seed, example,
                                          mesh)
    step_fn = jit_train_step(model, run.optim, shardings, mesh,
                             micro_batches=run.train.micro_batches,
                             label_smoothing=run.train.label_smoothing, z_loss=run.train.z_loss)
    iterator = pipeline.iterator()
    try:
        with sharding.activate(mesh):
            batches = [to_global_arrays({k: v[rows] for k, v in next(iterator).items()}, mesh)
                       for _ in range(run.train.steps)]
    finally:
        iterator.close()
    with sharding.activate(mesh):
        compiled = step_fn.lower(state, batches[0]).compile()
        for batch in batches[:warmup]:
            state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        start = time.perf_counter()
        for batch in batches[warmup:]:
            state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        return time.perf_counter() - start


def loop_overhead(config: ml_collections.ConfigDict, steps: int, warmup: int, rounds: int
                  ) -> dict[str, Any]:
    """Both sides `rounds` times, alternating; per side the median seconds per step. `config`
    is changed to run the window (set_window)."""
    warmup = set_window(config, steps, warmup)
    loop_s, bare_s = [], []
    summary = None
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as workdir:
            seconds, summary = time_trainer(config, warmup, workdir)
        loop_s.append(seconds / steps)
        bare_s.append(time_bare(config, warmup) / steps)
    tokens = summary.tokens_per_step
    loop, bare = float(np.median(loop_s)), float(np.median(bare_s))
    side = lambda s, per_round: {"tokens_per_second": tokens / s, "step_ms": 1e3 * s,
                                 "rounds_step_ms": [round(1e3 * x, 3) for x in per_round]}
    device = jax.devices()[0]
    return {
        "mode": "loop", "objective": config.objective, "family": config.model.family,
        "preset": config.model.preset, "batch_size": config.train.batch_size,
        "seq_len": config.data.seq_len, "tokens_per_step": tokens, "steps": steps,
        "warmup_steps": warmup, "log_every": config.train.log_every, "rounds": rounds,
        "platform": device.platform, "device": device.device_kind, "devices": jax.device_count(),
        "trainer": side(loop, loop_s), "bare": side(bare, bare_s),
        "host_overhead_ms_per_step": 1e3 * (loop - bare),
        "device_wait_fraction": float(np.median([1 - b / s for s, b in zip(loop_s, bare_s)])),
        "trainer_logged_tokens_per_second": summary.train.get("tokens_per_second"),
    }


def format_loop(result: dict[str, Any]) -> str:
    """The loop report as a few fixed-width lines."""
    lines = [f"{result['objective']} on a {result['family']} ({result['preset']}), batch "
             f"{result['batch_size']}, {result['tokens_per_step']:,} tokens/step, "
             f"{result['platform']} x{result['devices']}: {result['steps']} timed steps after "
             f"{result['warmup_steps']}, log every {result['log_every']}, {result['rounds']} "
             "round(s)",
             f"{'':14s} {'tokens/s':>10s} {'ms/step':>9s}  rounds (ms/step)"]
    for name in ("trainer", "bare"):
        r = result[name]
        lines.append(f"{name:14s} {r['tokens_per_second']:10,.0f} {r['step_ms']:9.2f}  "
                     + ", ".join(f"{x:.2f}" for x in r["rounds_step_ms"]))
    lines.append(f"host overhead {result['host_overhead_ms_per_step']:.2f} ms per step; the "
                 f"device waits for the host {100 * result['device_wait_fraction']:.1f}% of "
                 "each loop step (1 - bare / trainer, median of rounds)")
    return "\n".join(lines)


def run_loop(args: argparse.Namespace) -> dict[str, Any]:
    """The `loop` mode: --config with --set overrides, measured and printed."""
    config = load_config(args.config)
    apply_overrides(config, args.set)
    result = loop_overhead(config, args.steps, args.warmup, args.rounds)
    result["config"] = args.config
    print(json.dumps(result) if args.json else format_loop(result))
    return result
