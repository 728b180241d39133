"""The fair comparison of pretraining objectives: one model per objective, then one evaluation.

    rows = compare(get_config(), workdir)    # pretrain, fine-tune, write results.{md,csv}, curves.png

Fairness, arm by arm (an arm = objective + architecture):
* Same data: every arm reads the same corpus in the same order (the same `seed` and data config).
* Same pretraining tokens: each arm trains for `pretrain.tokens` tokens of corpus text, counted as
  the text the objective consumes per step (batch x the objective's raw length: 128 for CLM, MLM
  and prefix LM at seq_len 128; span corruption reads ~11% more text per example than its inputs
  hold, because the dropped spans move to the targets; UL2 reads seq_len - 2), so arms differ in
  steps, not in text. Sentinels, masks and padding are not tokens of text.
* Matched parameters: the natural pairing puts CLM and prefix LM on a decoder, MLM on an encoder,
  span corruption and UL2 on an encoder-decoder. Decoder and encoder have `model.num_layers`
  layers; the encoder-decoder splits them between its stacks and narrows its d_ff to pay for the
  decoder's cross-attention, so its parameter count is within `max_param_mismatch` (10%) of the
  decoder's (checked; the counts are in the results). `same_architecture=True` instead runs every
  objective that has an encoder-decoder form on the same encoder-decoder (the T5 paper's Table 4).
* Same downstream evaluation: each pretrained model, and a randomly initialised one per
  architecture (the no-pretraining baseline), is fine-tuned with `jaxlm.finetune` on the same task,
  steps, batch size, learning rate and seed, and scored by the final eval accuracy.
FLOPs are reported, not matched: at equal text, an encoder-decoder spends fewer FLOPs on span
corruption (its decoder reads only the ~15% of targets) than a decoder spends on CLM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxlm import config as config_lib
from jaxlm import objectives as objectives_lib
from jaxlm import trainer

NATURAL = objectives_lib.OBJECTIVES  # every objective of the registry may be compared
# The default arms: the five objectives of the signature comparison (bart, deshuffle, hybrid and
# nsp are opt-in: --config.objectives=clm,mlm,span_corruption,bart,hybrid).
DEFAULT_OBJECTIVES = ("clm", "mlm", "span_corruption", "prefix_lm", "ul2")
ENCODER_DECODER_FORMS = tuple(
    n for n in NATURAL if "encoder_decoder" in objectives_lib.families(n))


def get_config() -> ml_collections.ConfigDict:
    """The offline default: a ~0.2M-parameter model per objective, 2 CPU cores, < 20 minutes."""
    c = ml_collections.ConfigDict()
    c.objectives = ",".join(DEFAULT_OBJECTIVES)  # comma-separated subset of NATURAL
    c.same_architecture = False  # True: every objective on the encoder-decoder (T5 Table 4)
    c.seeds = 1  # repeats with seeds 0..n-1 (pretraining and fine-tuning); mean +- std
    c.max_param_mismatch = 0.10  # parameter counts of the arms must agree within this
    c.model = ml_collections.ConfigDict(dict(
        preset="tiny",  # the generic recipe (pre-LN, RMSNorm, rotary); sizes below override it
        d_model=64, num_heads=4, d_ff=256,
        num_layers=4,  # decoder / encoder layers; the encoder-decoder splits them (see above)
        dropout_rate=0.0))
    c.data = ml_collections.ConfigDict(dict(
        dataset="stdlib_docs", data_dir=ml_collections.FieldReference(None, field_type=str),
        vocab="byte", vocab_size=ml_collections.FieldReference(None, field_type=int),
        seq_len=128, shuffle_buffer=2048, window=256,
        shards=1))  # -1 on pods: every host reads its own part (see jaxlm/config.py)
    c.pretrain = ml_collections.ConfigDict(dict(
        tokens=1_048_576,  # text tokens per arm (2^20); the T5 paper's Table 4 used 2^35
        batch_size=32, learning_rate=3e-3, schedule="cosine", warmup_steps=30,
        log_every=25, eval_batches=4))
    # The pretraining optimizer: jaxlm/config.py's optim.name, weight_decay, grad_clip_norm and
    # adafactor.* (T5's Adafactor: name='adafactor', weight_decay=0, grad_clip_norm=0).
    optim = config_lib.get_config().optim
    c.pretrain.optim = ml_collections.ConfigDict(
        {k: optim[k] for k in ("name", "weight_decay", "grad_clip_norm", "adafactor")})
    c.finetune = ml_collections.ConfigDict(dict(
        tasks="stdlib_modules",  # comma-separated: stdlib_modules, glue/sst2, glue/mnli, ...
        steps=200, batch_size=32, learning_rate=1e-3, eval_every=100, seq_len=128,
        dropout=0.1))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return c


class Preempted(RuntimeError):
    """SIGTERM / SIGINT during a pretraining run: its step is saved, rerun to continue."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """One pretraining run: an objective on an architecture."""

    objective: str
    family: str
    model: dict[str, Any]  # model-section overrides (layers, d_ff ...)

    @property
    def name(self) -> str:
        return f"{self.objective}-{self.family}"


def _objectives(c: ml_collections.ConfigDict) -> list[str]:
    names = [n.strip() for n in str(c.objectives).split(",") if n.strip()]
    unknown = [n for n in names if n not in NATURAL]
    if unknown or not names:
        raise config_lib.ConfigError(f"objectives={c.objectives!r} is invalid: expected a "
                                     f"comma-separated subset of {','.join(NATURAL)}")
    if c.same_architecture:
        dropped = [n for n in names if n not in ENCODER_DECODER_FORMS]
        if dropped:
            raise config_lib.ConfigError(
                f"objectives={c.objectives!r} is invalid with same_architecture=True: "
                f"{', '.join(dropped)} have no encoder-decoder form here; choose from "
                f"{','.join(ENCODER_DECODER_FORMS)}")
    return names


def _param_count(model_section: dict[str, Any], family: str) -> int:
    from jaxlm.models.config import model_config_from

    return _count_params(model_config_from({**model_section, "family": family}))


def _count_params(cfg: Any) -> int:
    """Parameters of the model `cfg`, from shapes alone (nothing is initialised)."""
    from jaxlm.models import build_model, dummy_batch

    model = build_model(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy_batch(cfg, 1, 8)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def _row(arm: Arm, cfg: Any, seed: int, run_dir: str, downstream: dict[str, Any],
         start: float, **pretraining: Any) -> dict[str, Any]:
    """One result.json: the arm, its architecture, its pretraining and downstream numbers."""
    layers = (f"{cfg.num_layers}+{cfg.decoder_layers}" if cfg.family == "encoder_decoder"
              else str(cfg.num_layers))
    return {"objective": pretraining.pop("objective", arm.objective), "family": arm.family,
            "seed": seed, "params": _count_params(cfg), "layers": layers, "d_ff": cfg.d_ff,
            **pretraining, "downstream": downstream, "run_dir": run_dir,
            "wall_seconds": time.perf_counter() - start}


def matched_encoder_decoder(model: dict[str, Any]) -> dict[str, Any]:
    """The encoder-decoder of about the decoder's parameter count: num_layers split between the
    stacks (encoder gets the extra one if odd), d_ff narrowed (to a multiple of 64, or of 8 when
    small) so the block
    matrices add up to the decoder's, paying for cross-attention."""
    d, layers, d_ff = model["d_model"], model["num_layers"], model["d_ff"]
    encoder = (layers + 1) // 2
    decoder = max(layers - encoder, 1)
    attention = 4 * d * d
    target = layers * (attention + 2 * d * d_ff)
    mlp_budget = target - (encoder + 2 * decoder) * attention
    narrowed = mlp_budget / (2 * d * (encoder + decoder))
    quantum = 64 if narrowed >= 1024 else 8  # MXU-friendly when it costs little precision
    narrowed = max(quantum, int(round(narrowed / quantum)) * quantum)
    return {**model, "num_layers": encoder, "num_decoder_layers": decoder, "d_ff": narrowed}


def plan(c: ml_collections.ConfigDict) -> list[Arm]:
    """The arms of the comparison, with their parameter counts checked against each other."""
    base = {k: v for k, v in c.model.to_dict().items() if v is not None}
    encdec = matched_encoder_decoder(base)
    if c.same_architecture:  # nothing to match against: the layers split, d_ff as configured
        encdec = {**encdec, "d_ff": base["d_ff"]}
    arms = []
    for objective in _objectives(c):
        family = ("encoder_decoder" if c.same_architecture
                  else config_lib.NATURAL_FAMILY[objective])
        arms.append(Arm(objective, family, encdec if family == "encoder_decoder" else base))
    if len({a.family for a in arms}) > 1:
        counts = {a.family: _param_count(a.model, a.family) for a in arms}
        low, high = min(counts.values()), max(counts.values())
        if high > (1 + c.max_param_mismatch) * low:
            raise config_lib.ConfigError(
                f"model: parameter counts {counts} differ by more than max_param_mismatch="
                f"{c.max_param_mismatch}; change model.d_model / num_layers / d_ff")
    return arms


def pretrain_config(c: ml_collections.ConfigDict, arm: Arm, seed: int,
                    steps: int) -> ml_collections.ConfigDict:
    """The trainer config of one arm (jaxlm.config fields; see `get_config` for the values)."""
    config = config_lib.get_config()
    config.seed = seed
    config.objective = arm.objective
    for key, value in arm.model.items():
        config.model[key] = value
    config.model.family = arm.family
    for key, value in c.data.to_dict().items():
        config.data[key] = value
    p = c.pretrain
    config.train.steps = steps
    config.train.batch_size = p.batch_size
    config.train.log_every = p.log_every
    config.train.eval_every = 0  # the final evaluation only
    config.train.eval_batches = p.eval_batches
    config.optim.update(p.optim.to_dict())
    config.optim.learning_rate = p.learning_rate
    config.optim.schedule = p.schedule
    config.optim.warmup_steps = min(p.warmup_steps, steps)
    config.checkpoint.every_steps = steps
    config.checkpoint.keep = 1
    for axis in ("data", "fsdp", "tensor"):
        config.mesh[axis] = c.mesh[axis]
    return config


def steps_for(c: ml_collections.ConfigDict, arm: Arm, seed: int) -> tuple[int, int]:
    """(steps, text tokens per step) that spend `pretrain.tokens` on this arm."""
    _, _, pipeline = trainer.setup(pretrain_config(c, arm, seed, 1))
    per_step = c.pretrain.batch_size * pipeline.layout.raw_len
    return max(1, int(round(c.pretrain.tokens / per_step))), per_step


def _read_json(path: str) -> dict[str, Any] | None:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def _write_json(path: str, value: Any) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def run_arm(c: ml_collections.ConfigDict, arm: Arm, seed: int, tasks: list[Any], workdir: str,
            say: Callable[[str], None]) -> dict[str, Any]:
    """Pretrains one arm (resuming if interrupted) and fine-tunes it on every task; the result
    is kept in WORKDIR/seed_S/ARM/result.json, so a rerun skips finished arms."""
    from jaxlm.finetune import finetune, load_pretrained

    run_dir = os.path.join(workdir, f"seed_{seed}", arm.name)
    done = _read_json(os.path.join(run_dir, "result.json"))
    if done is not None:
        say(f"{arm.name} seed {seed}: done before ({os.path.join(run_dir, 'result.json')})")
        return done
    steps, text_per_step = steps_for(c, arm, seed)
    start = time.perf_counter()
    summary = trainer.train(pretrain_config(c, arm, seed, steps), run_dir, say=say)
    if summary.stopped == "preempted":  # saved; the same command resumes this arm
        raise Preempted(f"{arm.name} seed {seed} stopped at step {summary.final_step}")
    pretrain_seconds = time.perf_counter() - start
    model_cfg, params = load_pretrained(run_dir)
    downstream = {}
    for task in tasks:
        result = finetune(model_cfg, params, task, **_finetune_kwargs(c, seed), log=say)
        downstream[task.name] = result.to_dict()
    result = _row(arm, model_cfg, seed, run_dir, downstream, start, steps=steps,
                  text_tokens=steps * text_per_step, flops=summary.flops_per_step * steps,
                  train_loss=summary.train.get("loss"), eval_loss=summary.eval.get("loss"),
                  pretrain_seconds=pretrain_seconds)
    _write_json(os.path.join(run_dir, "result.json"), result)
    return result


def _finetune_kwargs(c: ml_collections.ConfigDict, seed: int) -> dict[str, Any]:
    f = c.finetune
    return dict(steps=f.steps, batch_size=f.batch_size, learning_rate=f.learning_rate,
                eval_every=f.eval_every, dropout=f.dropout, seed=seed)


def run_baseline(c: ml_collections.ConfigDict, arm: Arm, seed: int, tasks: list[Any],
                 workdir: str, say: Callable[[str], None]) -> dict[str, Any]:
    """The no-pretraining row of an architecture: the same fine-tuning from a random init."""
    from jaxlm.finetune import finetune

    run_dir = os.path.join(workdir, f"seed_{seed}", f"none-{arm.family}")
    done = _read_json(os.path.join(run_dir, "result.json"))
    if done is not None:
        return done
    os.makedirs(run_dir, exist_ok=True)
    start = time.perf_counter()
    # The model config alone (no pipeline): the architecture the arm pretrains.
    model_cfg = config_lib.resolve(pretrain_config(c, arm, seed, 1)).model
    downstream = {task.name: finetune(model_cfg, None, task, **_finetune_kwargs(c, seed),
                                      log=say).to_dict() for task in tasks}
    result = _row(arm, model_cfg, seed, run_dir, downstream, start, objective="none", steps=0,
                  text_tokens=0, flops=0.0, train_loss=None, eval_loss=None,
                  pretrain_seconds=0.0)
    _write_json(os.path.join(run_dir, "result.json"), result)
    return result


def compare(c: ml_collections.ConfigDict, workdir: str,
            say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Runs every arm and baseline for every seed, then writes the report; returns the results."""
    from jaxlm.data.tasks import load_task
    from jaxlm.report import write_report

    started = time.perf_counter()
    arms = plan(c)
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "comparison_config.json"), c.to_dict())
    vocab = trainer.setup(pretrain_config(c, arms[0], 0, 1))[2].vocab
    tasks = [load_task(name.strip(), vocab=vocab, seq_len=c.finetune.seq_len,
                       data_dir=c.data.data_dir)
             for name in str(c.finetune.tasks).split(",") if name.strip()]
    for task in tasks:
        say(task.summary())
    baselines = list({a.family: a for a in arms}.values())
    total = c.seeds * (len(arms) + len(baselines))
    results, done = [], 0
    for seed in range(c.seeds):
        for arm in arms:
            done += 1
            say(f"[{done}/{total}] seed {seed}: pretraining {arm.objective} on the {arm.family}, "
                f"then fine-tuning ({time.perf_counter() - started:.0f}s so far)")
            results.append(run_arm(c, arm, seed, tasks, workdir, say))
        for arm in baselines:
            done += 1
            say(f"[{done}/{total}] seed {seed}: no-pretraining baseline on the {arm.family}")
            results.append(run_baseline(c, arm, seed, tasks, workdir, say))
    write_report(results, tasks, workdir, same_architecture=bool(c.same_architecture))
    say(f"wrote {os.path.join(workdir, 'results.md')}, results.csv and curves.png in "
        f"{time.perf_counter() - started:.0f}s")
    return results
