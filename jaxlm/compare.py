"""The fair comparison of pretraining objectives: one model per objective, then one evaluation.

    rows = compare(get_config(), workdir)    # pretrain, evaluate, write results.{md,csv}, curves.png

Fairness, arm by arm (an arm = objective + architecture):
* Same data: every arm reads the same corpus in the same order (the same `seed` and data config).
  The default corpus is the stdlib corpus minus every held-out evaluation document
  (`data.dataset='stdlib_heldout'`, see jaxlm/compare_eval.py), with a SentencePiece vocabulary
  of `data.vocab_size` ids trained on its train split (cached in data_dir/vocab).
* An explicit budget (`pretrain.budget`): 'flops' (default) gives every arm the same model
  training FLOPs (`pretrain.flops`, counted per family by jaxlm.flops: an encoder-decoder's
  decoder reads only the targets, so span corruption takes more steps than CLM for the same
  FLOPs); 'tokens' gives every arm the same text (`pretrain.tokens`, counted as the text the
  objective consumes per step: batch x the objective's raw length). The report shows both.
* Matched parameters: the natural pairing puts CLM and prefix LM on a decoder, MLM on an encoder,
  span corruption and UL2 on an encoder-decoder. Decoder and encoder have `model.num_layers`
  layers; the encoder-decoder splits them between its stacks and narrows its d_ff to pay for the
  decoder's cross-attention, so its parameter count is within `max_param_mismatch` (10%) of the
  decoder's (checked; the counts are in the results). `same_architecture=True` instead runs every
  objective that has an encoder-decoder form on the same encoder-decoder (the T5 paper's Table 4).
* Same evaluation (jaxlm/compare_eval.py): each pretrained model, and a randomly initialised one
  per architecture (the no-pretraining baseline), gets the same frozen-feature probes, low-data
  fine-tuning and zero-shot minimal pairs on held-out documents; jaxlm/report.py turns the
  correctness matrices into intervals and paired significance tests.
Speed: on CPU every arm trains on one XLA device that spans the host's cores (XLA's intra-op
threads): against two devices of one core each, data parallel, its steps dispatch asynchronously
and need no all-reduce, and host work (the input pipeline) stalls one op instead of both devices at
the all-reduce. The trainer never waits on the host inside the step loop.
"""

from __future__ import annotations

import dataclasses
import io as io_lib
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxlm import compare_eval
from jaxlm import config as config_lib
from jaxlm import flops as flops_lib
from jaxlm import io
from jaxlm import metrics as metrics_lib
from jaxlm import objectives as objectives_lib
from jaxlm import trainer

NATURAL = objectives_lib.OBJECTIVES  # every objective of the registry may be compared
# The default arms: the five objectives of the signature comparison (bart, deshuffle, hybrid and
# nsp are opt-in: --config.objectives=clm,mlm,span_corruption,bart,hybrid).
DEFAULT_OBJECTIVES = ("clm", "mlm", "span_corruption", "prefix_lm", "ul2")
ENCODER_DECODER_FORMS = tuple(
    n for n in NATURAL if "encoder_decoder" in objectives_lib.families(n))


def get_config() -> ml_collections.ConfigDict:
    """The offline default: 5 arms of ~1.6M parameters on 2 CPU cores, 3 baselines, < 20 minutes."""
    c = ml_collections.ConfigDict()
    c.objectives = ",".join(DEFAULT_OBJECTIVES)  # comma-separated subset of NATURAL
    c.same_architecture = False  # True: every objective on the encoder-decoder (T5 Table 4)
    c.seeds = 1  # pretraining seeds 0..n-1 (each arm and baseline once per seed)
    c.max_param_mismatch = 0.10  # parameter counts of the arms must agree within this
    # On CPU: XLA's CPU device count and host.py's malloc settings, both set before JAX starts;
    # 0 on accelerators. One device over both cores: paired with two single-core devices (data
    # parallel) at 2.5e12 FLOPs per arm, MFU +0.02 on average (8 of 10 pairs; the isolated train
    # step 9-23% faster).
    c.num_cpu_devices = 1
    c.model = ml_collections.ConfigDict(dict(
        preset="tiny",  # the generic recipe (pre-LN, RMSNorm, rotary, tied embeddings)
        # Sized by the pretraining loss on the held-out split (CLM, same FLOPs, one run each):
        # at 2.4e13 FLOPs d_model 128 ended at 4.17 nats/token against 4.89 for d_model 256
        # (2.3x the text); at 1.6e13, 4.45 against 5.21 for d_model 192 and 4.60 for d_ff 1024
        # (two heads). One head of 128: MFU 0.31 against 0.28 for two heads of 64 (single runs;
        # the CPU peak behind MFU varies ~10% between processes).
        d_model=128, num_heads=1, d_ff=512, mlp_activation="geglu_tanh",
        num_layers=4,  # decoder / encoder layers; the encoder-decoder splits them (see above)
        # 2-4 small layers on CPU: unrolled, without rematerialisation (a step's activations are a
        # few MB). Paired over 3 rounds at 4e12 FLOPs, MFU 0.31-0.34 against 0.28-0.31 for the
        # span-corruption arm with the library's scan + remat defaults (CLM: +0.01).
        scan_layers=False, remat_policy="none",
        max_len=512, dropout_rate=0.0))
    c.data = ml_collections.ConfigDict(dict(
        # stdlib_heldout: the stdlib corpus minus every held-out evaluation document
        # (jaxlm/compare_eval.py); or any TFDS name (c4/en:3.1.0 ...)
        dataset="stdlib_heldout", data_dir=ml_collections.FieldReference(None, field_type=str),
        vocab="sentencepiece", vocab_size=ml_collections.FieldReference(4096, field_type=int),
        seq_len=128, shuffle_buffer=2048, window=256,
        shards=1))  # -1 on pods: every host reads its own part (see jaxlm/config.py)
    c.pretrain = ml_collections.ConfigDict(dict(
        budget="flops",  # flops: the same model FLOPs per arm | tokens: the same text per arm
        flops=1.6e13,  # model training FLOPs per arm (jaxlm.flops), with budget=flops
        tokens=1_048_576,  # text tokens per arm, with budget=tokens
        batch_size=16, learning_rate=2e-3, schedule="cosine", warmup_steps=20,
        log_every=25, eval_batches=4))
    # The pretraining optimizer: jaxlm/config.py's optim.name, weight_decay, grad_clip_norm and
    # adafactor.* (T5's Adafactor: name='adafactor', weight_decay=0, grad_clip_norm=0).
    optim = config_lib.get_config().optim
    c.pretrain.optim = ml_collections.ConfigDict(
        {k: optim[k] for k in ("name", "weight_decay", "grad_clip_norm", "adafactor")})
    c.evaluation = compare_eval.get_config()
    c.finetune = ml_collections.ConfigDict(dict(
        mode="lowdata",  # lowdata: evaluation.finetune_* on the held-out suite | full: also the
        # whole train split of each of `tasks` (GLUE from a tfds data_dir)
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


def matched_encoder_decoder(model: dict[str, Any]) -> dict[str, Any]:
    """The encoder-decoder of about the decoder's parameter count: num_layers split between the
    stacks (encoder gets the extra one if odd), d_ff narrowed (to a multiple of 64, or of 8 when
    small) so the block matrices add up to the decoder's, paying for cross-attention."""
    from jaxlm.models.config import GATED_ALIASES

    d, layers, d_ff = model["d_model"], model["num_layers"], model["d_ff"]
    mlp_matrices = 3 if model.get("mlp_gated") or model.get("mlp_activation") in GATED_ALIASES \
        else 2
    encoder = (layers + 1) // 2
    decoder = max(layers - encoder, 1)
    attention = 4 * d * d
    target = layers * (attention + mlp_matrices * d * d_ff)
    mlp_budget = target - (encoder + 2 * decoder) * attention
    narrowed = mlp_budget / (mlp_matrices * d * (encoder + decoder))
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


BUDGETS = ("flops", "tokens")


def pretrain_config(c: ml_collections.ConfigDict, arm: Arm, seed: int,
                    steps: int) -> ml_collections.ConfigDict:
    """The trainer config of one arm (jaxlm.config fields; see `get_config` for the values).
    `c.data.dataset` must name a TFDS dataset here (`pretraining_dataset` resolves it)."""
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


def steps_for(c: ml_collections.ConfigDict, arm: Arm, seed: int) -> tuple[int, int, float]:
    """(steps, text tokens per step, model FLOPs per step) that spend the arm's budget: the same
    FLOPs (`pretrain.budget='flops'`) or the same text (`'tokens'`) for every arm."""
    if c.pretrain.budget not in BUDGETS:
        raise config_lib.ConfigError(f"pretrain.budget={c.pretrain.budget!r} is invalid: "
                                     f"expected one of {', '.join(BUDGETS)}")
    run, _, pipeline = trainer.setup(pretrain_config(c, arm, seed, 1))
    lengths = trainer.stream_lengths(pipeline)
    cfg = run.model
    if cfg.family == "encoder_decoder":
        per_example = flops_lib.training_flops(cfg, lengths["encoder"], lengths["decoder"])
    else:
        per_example = flops_lib.training_flops(cfg, lengths[next(iter(lengths))])
    text_per_step = c.pretrain.batch_size * pipeline.layout.raw_len
    flops_per_step = float(c.pretrain.batch_size * per_example)
    budget, per_step = ((c.pretrain.flops, flops_per_step) if c.pretrain.budget == "flops"
                        else (c.pretrain.tokens, text_per_step))
    return max(1, int(round(budget / per_step))), text_per_step, flops_per_step


def _read_json(path: str) -> dict[str, Any] | None:
    return json.loads(io.read_text(path)) if io.exists(path) else None


def _write_json(path: str, value: Any) -> None:
    io.write_text(path, json.dumps(value, indent=2))  # atomic (one object on gs://)


def _speed(run_dir: str) -> dict[str, float | None]:
    """Pretraining MFU, tokens/s (means over the logged intervals), the peak FLOP/s MFU divides
    by (on CPU the process's best timing at the run's start; the last start's, for a resumed
    run) and compile seconds."""
    train = metrics_lib.read_metrics(run_dir, "train")
    mfu = [r["mfu"] for r in train if "mfu" in r]
    peaks = [r["peak_flops"] for r in train if "peak_flops" in r]
    speed = [r["tokens_per_second"] for r in train if "tokens_per_second" in r]
    compile_s = [r["compile_seconds"] for r in train if "compile_seconds" in r]
    return {"pretraining_mfu": float(np.mean(mfu)) if mfu else None,
            "pretraining_tokens_per_second": float(np.mean(speed)) if speed else None,
            "pretraining_peak_flops": peaks[-1] if peaks else None,
            "compile_seconds": float(sum(compile_s))}


@dataclasses.dataclass
class _Shared:
    """What every arm's evaluation reads: the config, the vocabulary and the suite."""

    c: ml_collections.ConfigDict
    workdir: str
    vocab: Any
    suite: compare_eval.Suite
    tasks: list[Any]
    say: Callable[[str], None]


def _evaluate(s: _Shared, cfg: Any, params: Any, objective: str, seed: int,
              run_dir: str) -> dict[str, Any]:
    """Scores one model, keeps the matrices in RUN_DIR/evaluation.npz; the full-data fine-tuning
    results of `finetune.mode='full'`."""
    from jaxlm.finetune import finetune

    start = time.perf_counter()
    scores = compare_eval.evaluate(cfg, params, s.suite, s.c.evaluation, s.vocab,
                                   objective=objective, seed=seed, say=s.say)
    downstream = {}
    if s.c.finetune.mode == "full":
        f = s.c.finetune
        for task in s.tasks:
            result = finetune(cfg, params, task, steps=f.steps, batch_size=f.batch_size,
                              learning_rate=f.learning_rate, eval_every=f.eval_every,
                              dropout=f.dropout, seed=seed, log=s.say)
            scores[f"full/{task.name}"] = np.asarray(result.eval_correct, np.float64)
            downstream[task.name] = {k: v for k, v in result.to_dict().items()
                                     if k != "eval_correct"}
    buffer = io_lib.BytesIO()
    np.savez(buffer, **scores)
    io.write_bytes(io.join(run_dir, "evaluation.npz"), buffer.getvalue())
    return {"downstream": downstream, "eval_seconds": time.perf_counter() - start}


def run_arm(s: _Shared, arm: Arm, seed: int) -> dict[str, Any]:
    """Pretrains one arm (resuming if interrupted) and evaluates it; the result is kept in
    WORKDIR/seed_S/ARM/result.json (+ evaluation.npz), so a rerun skips finished arms."""
    from jaxlm.checkpoint import load_pretrained

    run_dir = io.join(s.workdir, f"seed_{seed}", arm.name)
    done = _read_json(io.join(run_dir, "result.json"))
    if done is not None:
        s.say(f"{arm.name} seed {seed}: done before ({io.join(run_dir, 'result.json')})")
        return done
    start = time.perf_counter()
    steps, text_per_step, flops_per_step = steps_for(s.c, arm, seed)
    summary = trainer.train(pretrain_config(s.c, arm, seed, steps), run_dir, say=s.say)
    if summary.stopped == "preempted":  # saved; the same command resumes this arm
        raise Preempted(f"{arm.name} seed {seed} stopped at step {summary.final_step}")
    pretrain_seconds = time.perf_counter() - start
    cfg, params = load_pretrained(run_dir)
    result = {"objective": arm.objective, "family": arm.family, "seed": seed,
              "params": _count_params(cfg), "layers": _layers(cfg), "d_ff": cfg.d_ff,
              "steps": steps, "text_tokens": steps * text_per_step,
              "flops": steps * flops_per_step, **_speed(run_dir),
              "train_loss": summary.train.get("loss"), "eval_loss": summary.eval.get("loss"),
              "pretrain_seconds": pretrain_seconds, "run_dir": run_dir}
    result.update(_evaluate(s, cfg, params, arm.objective, seed, run_dir))
    result["wall_seconds"] = time.perf_counter() - start
    _write_json(io.join(run_dir, "result.json"), result)
    return result


def _layers(cfg: Any) -> str:
    return (f"{cfg.num_layers}+{cfg.decoder_layers}" if cfg.family == "encoder_decoder"
            else str(cfg.num_layers))


def run_baseline(s: _Shared, arm: Arm, seed: int) -> dict[str, Any]:
    """The no-pretraining row of an architecture: the same evaluation of a random init."""
    run_dir = io.join(s.workdir, f"seed_{seed}", f"none-{arm.family}")
    done = _read_json(io.join(run_dir, "result.json"))
    if done is not None:
        return done
    io.makedirs(run_dir)
    start = time.perf_counter()
    # The model config alone (no pipeline): the architecture the arm pretrains.
    cfg = config_lib.resolve(pretrain_config(s.c, arm, seed, 1)).model
    result = {"objective": "none", "family": arm.family, "seed": seed,
              "params": _count_params(cfg), "layers": _layers(cfg), "d_ff": cfg.d_ff,
              "steps": 0, "text_tokens": 0, "flops": 0.0, "pretraining_mfu": None,
              "pretraining_tokens_per_second": None, "pretraining_peak_flops": None,
              "compile_seconds": 0.0,
              "train_loss": None, "eval_loss": None, "pretrain_seconds": 0.0,
              "run_dir": run_dir}
    result.update(_evaluate(s, cfg, compare_eval.random_params(cfg, seed), "none", seed,
                            run_dir))
    result["wall_seconds"] = time.perf_counter() - start
    _write_json(io.join(run_dir, "result.json"), result)
    return result


def compare(c: ml_collections.ConfigDict, workdir: str,
            say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Runs every arm and baseline for every seed, then writes the report; returns the results."""
    from jaxlm.data.tasks import load_task
    from jaxlm.report import write_report

    started = time.perf_counter()
    arms = plan(c)
    io.makedirs(workdir)
    _write_json(io.join(workdir, "comparison_config.json"), c.to_dict())
    c = ml_collections.ConfigDict(c.to_dict())  # a copy: the resolved dataset goes into it
    c.data.dataset, c.data.data_dir = compare_eval.pretraining_dataset(c.data, workdir)
    vocab = trainer.setup(pretrain_config(c, arms[0], 0, 1))[2].vocab
    suite = compare_eval.build_suite(vocab, c.evaluation)
    say(suite.summary())
    tasks = []
    if c.finetune.mode == "full":
        tasks = [load_task(name.strip(), vocab=vocab, seq_len=c.finetune.seq_len,
                           data_dir=c.data.data_dir)
                 for name in str(c.finetune.tasks).split(",") if name.strip()]
    elif c.finetune.mode != "lowdata":
        raise config_lib.ConfigError(f"finetune.mode={c.finetune.mode!r} is invalid: expected "
                                     "lowdata or full")
    shared = _Shared(c, workdir, vocab, suite, tasks, say)
    baselines = list({a.family: a for a in arms}.values())
    total = c.seeds * (len(arms) + len(baselines))
    results, done = [], 0
    for seed in range(c.seeds):
        for arm in arms:
            done += 1
            say(f"[{done}/{total}] seed {seed}: pretraining {arm.objective} on the {arm.family}, "
                f"then evaluating ({time.perf_counter() - started:.0f}s so far)")
            results.append(run_arm(shared, arm, seed))
        for arm in baselines:
            done += 1
            say(f"[{done}/{total}] seed {seed}: no-pretraining baseline on the {arm.family}")
            results.append(run_baseline(shared, arm, seed))
    write_report(results, workdir, c, wall_seconds=time.perf_counter() - started)
    say(f"wrote {io.join(workdir, 'results.md')}, results.csv and curves.png in "
        f"{time.perf_counter() - started:.0f}s")
    return results
