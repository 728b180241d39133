"""Fine-tune a pretrained (or freshly initialised) jaxlm model on a classification Task.

    cfg, params = jaxlm.checkpoint.load_pretrained("runs/clm")  # or load_hf(path), or None
    task = load_task("stdlib_modules", vocab=ByteVocabulary(), seq_len=128)
    result = finetune(cfg, params, task, steps=300, batch_size=32, learning_rate=1e-3, seed=0)
    result.final_accuracy, result.history                       # accuracy every eval_every steps

Every family is fine-tuned the same way, so a comparison of pretraining objectives changes nothing
but the pretrained weights: the same task, steps, batch size, optimizer, schedule, dropout and seed.
The model runs with `return_hidden=True` (final hidden states, after the final norm) and the
`Classifier` pools them into one vector per example, then a linear head (`classifier`) gives the
class logits. Pooling per family (`POOLING`):
  * encoder: mean over the non-pad tokens. Every position has seen the whole input, and the MLM
    objective trains no summary token (BERT's [CLS] gets its meaning from next-sentence
    prediction, which jaxlm does not have), so the mean is the natural sentence vector.
  * decoder: the state at the last non-pad position, the only one that has seen the whole input
    (GPT-1's choice). The decoder reads the text shifted right with pad as BOS, exactly as in
    pretraining, so that state is the one that would predict EOS.
  * encoder_decoder: the encoder reads the text; the decoder gets the single start token (id 0)
    and its one final state, which cross-attends to the whole input, feeds the head (BART's
    sequence classification, with the start token instead of a repeated EOS).
All parameters are trained (no frozen layers) with AdamW, linear warmup over the first 10% of
steps and a linear decay to 0 (the BERT fine-tuning recipe), weight decay 0.01 on matrices,
gradient clipping at 1.0, and dropout (`dropout`, default 0.1) on the model's hidden states and
before the head (none on attention probabilities, for speed).

Reporting: `final_accuracy` (after the last step) is the number to compare, not `best_accuracy`:
the maximum over a noisy accuracy curve is biased upwards, more so for less stable models, and
picking it would use the eval split for model selection (the offline task has no separate test
split). `best_accuracy` is kept in the result for diagnosis only.

Devices: the batch is split over a data-parallel mesh of every device jax sees; pass `mesh` to use
others. Training runs on jaxlm.train's core (`state_initializer`, the donated `jit_train_step`)
with `classification_loss` plugged in; the init and the steps are cached per (model, head, batch
shape, optimizer, mesh), so several seeds or checkpoints compile once. Runs are deterministic for
a seed: init, batch order and dropout all derive from it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm import io, sharding
from jaxlm.data.tasks import Task
from jaxlm.models import ModelConfig
from jaxlm.models.layers import DenseGeneral, constrain
from jaxlm.models.transformer import FAMILY_MODULES, decoder_valid, encoder_valid
from jaxlm.losses import token_loss, weighted_sums
from jaxlm.optim import OptimConfig, make_optimizer
from jaxlm.train import (LossFn, TrainState, batch_rows_sharding, jit_train_step,
                         state_initializer)

Array = jax.Array

POOLING = {"encoder": "mean", "decoder": "last", "encoder_decoder": "first"}
POOLINGS = ("mean", "last", "first")
EVAL_BATCH_SIZE = 128


# --------------------------------------------------------------------------------------------------
# The classification model


def classifier_batch(family: str, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Model features for EOS-terminated, 0-padded token rows [B, L] (see the module docstring)."""
    tokens = np.asarray(tokens, np.int32)
    if family == "encoder":
        return {"encoder_input_tokens": tokens}
    if family == "decoder":
        # T5X / CLM pretraining convention: inputs are the targets shifted right with pad (0) as
        # BOS; the targets only mark which positions are real.
        shifted = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
        return {"decoder_input_tokens": shifted, "decoder_target_tokens": tokens}
    if family == "encoder_decoder":
        return {"encoder_input_tokens": tokens,
                "decoder_input_tokens": np.zeros((tokens.shape[0], 1), np.int32)}
    raise ValueError(f"Unknown model family {family!r}.")


def pool(hidden_BxLxD: Array, valid_BxL: Array, mode: str) -> Array:
    """One vector per example: mean over valid positions, the last valid one, or the first."""
    if mode == "mean":
        w = valid_BxL.astype(jnp.float32)[..., None]
        return (hidden_BxLxD.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    if mode == "last":
        last = jnp.maximum(valid_BxL.sum(1) - 1, 0)  # all-pad rows (eval padding): position 0
        return jnp.take_along_axis(hidden_BxLxD, last[:, None, None], axis=1)[:, 0]
    if mode == "first":
        return hidden_BxLxD[:, 0]
    raise ValueError(f"pooling={mode!r} is invalid: expected one of {', '.join(POOLINGS)}.")


class Classifier(nn.Module):
    """A jaxlm model (`backbone`) + pooling + a linear head (`classifier`) -> float32 logits."""

    cfg: ModelConfig
    num_classes: int
    pooling: str | None = None  # None: the family's POOLING

    @nn.compact
    def __call__(self, batch: Mapping[str, Array], *, deterministic: bool = True) -> Array:
        cfg = self.cfg
        backbone = FAMILY_MODULES[cfg.family](cfg, name="backbone")
        hidden = backbone(batch, deterministic=deterministic, return_hidden=True)
        # The decoder stream is a single position for encoder_decoder.
        valid = encoder_valid(batch) if cfg.family == "encoder" else decoder_valid(batch)
        x = pool(hidden, valid, self.pooling or POOLING[cfg.family])
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        logits = DenseGeneral((self.num_classes,), ("embed", "classes"), cfg, use_bias=True,
                              name="classifier")(x)
        return constrain(logits.astype(jnp.float32), ("activation_batch", None))


def classification_loss(model: Classifier) -> LossFn:
    """The classifier's LossFn for the shared step: cross-entropy of the class logits against
    `labels` (losses.token_loss, so accuracy is argmax == label), one weight per example
    (`label_weights`, default 1; the eval split's padding rows have 0)."""
    def loss_fn(params: Any, batch: Mapping[str, Array], key: Array | None = None) -> dict:
        logits = model.apply({"params": params}, batch, deterministic=key is None,
                             rngs=None if key is None else {"dropout": key})
        weights = batch.get("label_weights", jnp.ones(batch["labels"].shape, jnp.float32))
        return weighted_sums(*token_loss(logits, batch["labels"]), weights)
    return loss_fn


class ClassifierSteps:
    """A classifier's state creation and its jitted train / eval steps on a mesh, all from
    jaxlm.train: the sharded init of `state_initializer` and the donated `jit_train_step`,
    with `classification_loss` plugged in. The init and the steps compile on the first `init`."""

    def __init__(self, cfg: ModelConfig, num_classes: int, pooling: str, optim_cfg: OptimConfig,
                 mesh: Mesh, batch_size: int, seq_len: int,
                 rules: sharding.Rules = sharding.DEFAULT_RULES) -> None:
        self.model = Classifier(cfg, num_classes, pooling)
        self.optim_cfg, self.mesh, self.rules = optim_cfg, mesh, rules
        self.example = {k: jnp.zeros(v.shape, v.dtype) for k, v in classifier_batch(
            cfg.family, np.zeros((batch_size, seq_len), np.int32)).items()}
        self.jitted: tuple[Callable, Callable] | None = None
        self.initializer: tuple[Callable[[int], TrainState], Any] | None = None

    def init(self, seed: int, pretrained: Any | None = None) -> TrainState:
        """A fresh state (head and, without `pretrained`, backbone initialised from `seed`)."""
        if self.initializer is None:  # compiled once: every k-shot subset starts a state
            self.initializer = state_initializer(self.model, make_optimizer(self.optim_cfg),
                                                 self.example, self.mesh, self.rules)
        make_state, shardings = self.initializer
        state = make_state(seed)
        if self.jitted is None:
            loss_fn = classification_loss(self.model)
            self.jitted = (jit_train_step(self.model, self.optim_cfg, shardings, self.mesh,
                                          rules=self.rules, loss_fn=loss_fn),
                           jax.jit(self._predict, in_shardings=(
                               shardings.params, batch_rows_sharding(self.mesh)),
                               out_shardings=NamedSharding(self.mesh, PartitionSpec())))
        if pretrained is not None:  # AdamW's state (zero moments, a count) stays as it is
            backbone = jax.device_put(_match_backbone(pretrained, state.params["backbone"]),
                                      shardings.params["backbone"])
            state = state.replace(params={**state.params, "backbone": backbone})
        return state

    def _predict(self, params: Any, batch: dict) -> Array:
        return jnp.argmax(self.model.apply({"params": params}, batch), axis=-1)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        with sharding.activate(self.mesh, self.rules):
            return self.jitted[0](state, batch)

    def correct(self, params: Any, batches: list[dict]) -> np.ndarray:
        """[examples] bool: whether each example of `batches` (padding rows, whose
        `label_weights` are 0, left out) is predicted right, for per-example bootstraps."""
        with sharding.activate(self.mesh, self.rules):
            predictions = jax.device_get([self.jitted[1](params, b) for b in batches])
        right = [np.asarray(p) == np.asarray(b["labels"]) for p, b in zip(predictions, batches)]
        keep = [np.asarray(b.get("label_weights", np.ones(len(b["labels"])))) > 0
                for b in batches]
        return np.concatenate([r[k] for r, k in zip(right, keep)])

    def put(self, batch: dict) -> dict:
        """Host batch -> device arrays split over the data-parallel axes."""
        return jax.device_put(batch, batch_rows_sharding(self.mesh))


classifier_steps = functools.lru_cache(maxsize=8)(ClassifierSteps)  # per set-up: compile once


def _match_backbone(pretrained: Any, abstract: Any) -> Any:
    """The pretrained params the classifier's backbone uses, checked against its shapes.

    The LM output head (`head/...`: lm_head, output_bias, BERT's transform) is dropped: the
    classifier reads the hidden states before it. Anything else missing or misshapen is an error
    naming the parameter, so a checkpoint of another architecture is never half-loaded.
    """
    have = flatten_dict(nn.meta.unbox(dict(pretrained)), sep="/")
    want = flatten_dict(dict(abstract), sep="/")
    missing = sorted(set(want) - set(have))
    if missing:
        raise ValueError(f"The pretrained params lack {len(missing)} backbone params, e.g. "
                         f"{missing[:3]}: is the model config the checkpoint's?")
    for name, spec in want.items():
        if tuple(have[name].shape) != tuple(spec.shape):
            raise ValueError(f"Pretrained param {name} has shape {tuple(have[name].shape)}, the "
                             f"model config implies {tuple(spec.shape)}.")
    unused = sorted(k for k in set(have) - set(want) if not k.startswith("head/"))
    if unused:
        raise ValueError(f"Pretrained params {unused[:3]} have no place in the backbone: is the "
                         "model config the checkpoint's?")
    # Copies, always: the train step donates the state, and device_put may hand over the
    # caller's own buffers (on the target devices already, or one shard of them), which a second
    # fine-tuning from the same params (one per k-shot subset) would then find deleted.
    return unflatten_dict({k: jnp.array(have[k], want[k].dtype, copy=True) for k in want},
                          sep="/")


# --------------------------------------------------------------------------------------------------
# Fine-tuning


@dataclasses.dataclass
class FinetuneResult:
    """What a fine-tuning run measured; `final_accuracy` is the number to report."""

    task: str
    family: str
    pooling: str
    num_params: int
    steps: int
    batch_size: int
    learning_rate: float
    dropout: float
    seed: int
    pretrained: bool
    majority_accuracy: float
    history: list[dict[str, float]]  # {step, accuracy, train_loss} every eval_every steps
    final_accuracy: float
    best_accuracy: float  # diagnosis only (see the module docstring)
    best_step: int
    final_train_loss: float  # mean over the last eval interval
    wall_time_s: float  # everything: init, compile, steps, evals
    compile_time_s: float  # the first step (compile + run)
    step_time_s: float  # mean per train step after the first, evals excluded
    eval_correct: list[int]  # per eval example, 1 where the final model is right (for bootstraps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def finetune(model_cfg: ModelConfig, params: Any | None, task: Task, *, steps: int = 300,
             batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0,
             eval_every: int = 50, dropout: float = 0.1, weight_decay: float = 0.01,
             warmup_fraction: float = 0.1, pooling: str | None = None, mesh: Mesh | None = None,
             log: Callable[[str], None] | None = print,
             rules: sharding.Rules = sharding.DEFAULT_RULES) -> FinetuneResult:
    """Fine-tunes `params` (None: the no-pretraining baseline, a random init from `seed`) with a
    fresh classification head on `task.train`; accuracy on `task.eval` every `eval_every` steps
    and after the last. `log` (default print) gets one progress line per eval; None: silent."""
    start = time.perf_counter()
    emit = log or (lambda _: None)
    mesh = mesh or sharding.make_mesh(-1, 1, 1)
    data_size = mesh.shape["data"] * mesh.shape["fsdp"]
    _check_args(model_cfg, task, steps, batch_size, eval_every, learning_rate, dropout,
                warmup_fraction, pooling, data_size)
    # Attention-probability dropout is off: on CPU its [B, H, L, L] random bits cost ~25% of a
    # tiny model's step; hidden-state dropout alone regularises a few epochs of fine-tuning.
    cfg = model_cfg.replace(dropout_rate=dropout, attention_dropout_rate=0.0)
    family = cfg.family
    pooling = pooling or POOLING[family]
    optim_cfg = OptimConfig(name="adamw", learning_rate=learning_rate, schedule="linear",
                            warmup_steps=int(round(warmup_fraction * steps)), total_steps=steps,
                            final_lr_fraction=0.0, b1=0.9, b2=0.999, eps=1e-8,
                            weight_decay=weight_decay, grad_clip_norm=1.0)
    fns = classifier_steps(cfg, task.num_classes, pooling, optim_cfg, mesh, batch_size,
                           task.seq_len, rules)
    state = fns.init(seed, params)
    num_params = sum(int(x.size) for x in jax.tree.leaves(state.params))

    eval_size = -(-EVAL_BATCH_SIZE // data_size) * data_size
    eval_batches = _eval_batches(family, task, eval_size, fns.put)
    order = _batch_order(len(task.train), batch_size, steps, seed)
    emit(f"fine-tuning {family} ({num_params / 1e6:.2f}M params, "
         f"{'pretrained' if params is not None else 'random init'}) on {task.summary()}; "
         f"{steps} steps of {batch_size}, lr {learning_rate:g}, dropout {dropout:g}, "
         f"pooling {pooling}")

    history: list[dict[str, float]] = []
    losses: list[float] = []
    pending: Array | None = None
    compile_time = eval_time = 0.0
    interval_start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = order[step - 1]
        batch = classifier_batch(family, task.train.tokens[idx])
        batch["labels"] = task.train.labels[idx]
        state, metrics = fns.train_step(state, fns.put(batch))
        # Read step n-1's loss once step n is queued: the host stays one step ahead, never more
        # (an unbounded queue of collectives can stall XLA's CPU runtime with many fake devices).
        if pending is not None:
            losses.append(float(pending))
        pending = metrics["loss"]
        evaluate_now = step % eval_every == 0 or step == steps
        if step == 1 or evaluate_now:
            losses.append(float(pending))
            pending = None
        if step == 1:  # the first step compiles: timed apart from the others
            compile_time, interval_start = time.perf_counter() - interval_start, time.perf_counter()
        if evaluate_now:
            train_loss = float(np.mean(losses[-eval_every:]))
            t = time.perf_counter()
            correct = fns.correct(state.params, eval_batches)
            accuracy = float(np.mean(correct))
            eval_time += time.perf_counter() - t
            history.append({"step": step, "accuracy": accuracy, "train_loss": train_loss})
            emit(f"  step {step:5d}/{steps}  train_loss {train_loss:.4f}  eval_accuracy "
                 f"{accuracy:.4f}  (majority {task.majority_accuracy:.4f})")
    train_time = time.perf_counter() - interval_start - eval_time
    best = max(history, key=lambda h: (h["accuracy"], -h["step"]))
    result = FinetuneResult(
        task=task.name, family=family, pooling=pooling, num_params=num_params, steps=steps,
        batch_size=batch_size, learning_rate=learning_rate, dropout=dropout, seed=seed,
        pretrained=params is not None, majority_accuracy=task.majority_accuracy, history=history,
        final_accuracy=history[-1]["accuracy"], best_accuracy=best["accuracy"],
        best_step=int(best["step"]), final_train_loss=history[-1]["train_loss"],
        wall_time_s=time.perf_counter() - start, compile_time_s=compile_time,
        step_time_s=train_time / max(steps - 1, 1), eval_correct=correct.astype(int).tolist())
    emit(f"final eval accuracy {result.final_accuracy:.4f} (majority "
         f"{result.majority_accuracy:.4f}); {1000 * result.step_time_s:.1f} ms/step, first step "
         f"{result.compile_time_s:.1f}s, total {result.wall_time_s:.1f}s")
    return result


def _check_args(cfg: ModelConfig, task: Task, steps: int, batch_size: int, eval_every: int,
                learning_rate: float, dropout: float, warmup_fraction: float,
                pooling: str | None, data_size: int) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: expected a positive integer.")
    if batch_size % data_size:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {data_size} "
                         "data-parallel devices.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate!r} is invalid: expected > 0.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} is invalid: expected a rate in [0, 1).")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"warmup_fraction={warmup_fraction!r} is invalid: expected [0, 1].")
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is invalid: expected one of {', '.join(POOLINGS)}.")
    if task.vocab_size > cfg.vocab_size:
        raise ValueError(f"The task was tokenized with a vocabulary of {task.vocab_size} ids, more "
                         f"than the model's vocab_size={cfg.vocab_size}: use the vocabulary the "
                         "model was pretrained with.")
    if cfg.position == "learned" and task.seq_len > cfg.max_len:
        raise ValueError(f"seq_len={task.seq_len} exceeds the model's max_len={cfg.max_len}.")
    if len(task.train) < batch_size:
        raise ValueError(f"{task.name} has {len(task.train)} train examples, fewer than "
                         f"batch_size={batch_size}.")


def _batch_order(num_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """[steps, batch_size] example indices: epochs of seeded permutations, read in order (an
    epoch's tail carries over into the next batch, so every example is seen equally often)."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    stream = np.concatenate([rng.permutation(num_examples)
                             for _ in range(-(-needed // num_examples))])
    return stream[:needed].reshape(steps, batch_size)


def _eval_batches(family: str, task: Task, size: int,
                  put: Callable[[dict], dict]) -> list[dict]:
    """The eval split in fixed batches, the last padded with all-pad rows that count for nothing
    (every batch has one shape, so eval compiles once)."""
    batches = []
    for begin in range(0, len(task.eval), size):
        tokens = task.eval.tokens[begin:begin + size]
        labels = task.eval.labels[begin:begin + size]
        pad = size - len(labels)
        batch = classifier_batch(family, np.pad(tokens, ((0, pad), (0, 0))))
        batch["labels"] = np.pad(labels, (0, pad))
        batch["label_weights"] = (np.arange(size) < len(labels)).astype(np.float32)
        batches.append(put(batch))
    return batches


# --------------------------------------------------------------------------------------------------
# Loading pretrained models (trainer run directories: jaxlm.checkpoint.load_pretrained)


def load_hf(path: str) -> tuple[ModelConfig, Any]:
    """(ModelConfig, params) of a Hugging Face GPT-2, BERT or T5 folder (jaxlm.hf.from_hf)."""
    from jaxlm.hf import from_hf

    if not io.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a folder with a Hugging Face checkpoint.")
    model, params = from_hf(path)
    return model.cfg, params
