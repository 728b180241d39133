"""The run configuration: one ml_collections ConfigDict, grouped by section.

Every field has an inline comment; any field is overridable from the command line as
`--config.section.field=value`. `resolve` turns the ConfigDict into typed, validated sections
(`RunConfig`) and fails before any compile, naming the field, the value and what would be valid.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from jaxlm import objectives as objectives_lib
from jaxlm.data.pipeline import DataConfig
from jaxlm.models.config import FIELD_TYPES as MODEL_FIELD_TYPES
from jaxlm.models.config import ModelConfig, model_config_from
from jaxlm import sharding
from jaxlm.optim import AdafactorConfig, OptimConfig

# The family each objective trains when model.family is None (the natural pairing).
NATURAL_FAMILY = objectives_lib.NATURAL_FAMILY

# Objective options a user can set, per objective (the vocabulary-derived ones come from data).
OBJECTIVE_OPTIONS = {
    "mlm": dict(mask_rate=0.15,  # fraction of non-special tokens selected
                mask_token_fraction=0.8,  # of the selected: replaced by the mask id (BERT 0.8)
                random_token_fraction=0.1),  # ... by a random id (BERT 0.1; T5 "BERT-style" 0)
    "span_corruption": dict(noise_density=0.15,  # fraction of tokens in masked spans (T5 0.15)
                            mean_noise_span_length=3.0),  # T5: 3
    "prefix_lm": {},
    "clm": {},
    "ul2": dict(denoisers="default"),  # 'default' (UL2 paper) or 'span:3:0.15:nlu,prefix:s2s,...'
    "bart": dict(mask_ratio=0.3,  # fraction of tokens in masked spans, in (0, 1) (BART 0.3)
                 poisson_lambda=3.0,  # mean span length, > 0: spans ~ Poisson(lambda) (BART 3)
                 permute_sentences=True,  # shuffle the input's sentences (BART's best setting)
                 random_ratio=0.0),  # fraction of the mask tokens replaced by a random id
    "deshuffle": {},
    "nsp": dict(mask_rate=0.15, mask_token_fraction=0.8, random_token_fraction=0.1),  # BERT's
    "hybrid": dict(causal_fraction=0.0625,  # examples that are causal, in [0, 1] (GPT-BERT 1/16)
                   mask_rate=0.15,  # masked examples: fraction of tokens selected, in (0, 1)
                   mask_token_fraction=0.8,  # of the selected: replaced by the mask id
                   random_token_fraction=0.1),  # ... by a random id
}


def get_config() -> ml_collections.ConfigDict:
    """The default configuration: the tiny decoder, causal LM on the offline corpus."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameter init, dropout and data order
    # clm | mlm | span_corruption | prefix_lm | ul2 | bart | deshuffle | hybrid | nsp
    config.objective = "clm"

    config.model = ml_collections.ConfigDict()
    config.model.preset = "tiny"  # tiny | small | base | large | gpt2 | bert_base | t5_base | ...
    # Every architecture field of jaxlm.models.ModelConfig; None keeps the preset's value, except
    # vocab_size (None: the data vocabulary's size) and family (None: the objective's natural one).
    # Typed placeholders, so that `--config.model.d_model=128` parses as an int.
    for field, field_type in MODEL_FIELD_TYPES.items():
        config.model[field] = ml_collections.FieldReference(None, field_type=field_type)

    config.objectives = ml_collections.ConfigDict(
        {name: dict(options) for name, options in OBJECTIVE_OPTIONS.items() if options})

    config.data = ml_collections.ConfigDict()
    data = DataConfig()
    config.data.dataset = data.dataset  # TFDS name[/config][:version]; stdlib_docs needs no download
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default
    config.data.text_feature = data.text_feature  # the string feature holding the text
    config.data.train_split = data.train_split
    config.data.eval_split = data.eval_split
    config.data.seq_len = data.seq_len  # encoder / decoder-only length
    config.data.vocab = data.vocab  # byte | sentencepiece (trained once, cached) | path/to/x.model
    config.data.vocab_size = ml_collections.FieldReference(None, field_type=int)  # sentencepiece
    config.data.shuffle_buffer = data.shuffle_buffer  # documents per shuffle block
    config.data.packing = data.packing  # auto | concat | greedy | none
    config.data.window = data.window  # documents per tokenize/pack window (resume granularity)
    # 1: every process reads the whole stream and keeps its rows (identical batches on any number
    # of processes); -1: one disjoint shard per process (set this on pods); k: k shards.
    config.data.shards = data.shards

    config.train = ml_collections.ConfigDict()
    config.train.steps = 1000  # optimizer steps of the run (extend it and rerun to continue)
    config.train.batch_size = 32  # global batch, in sequences
    config.train.micro_batches = 1  # gradient accumulation: micro-batches per step
    config.train.log_every = 10  # steps between metrics.jsonl / console lines
    config.train.eval_every = 200  # steps between evaluations (and one at the end); 0: only end
    config.train.eval_batches = 10  # validation batches per evaluation
    config.train.label_smoothing = 0.0
    config.train.z_loss = 0.0  # PaLM's log(Z)^2 penalty weight (1e-4 there)
    # Per-device peak FLOP/s for MFU; None: the table in jaxlm/metrics.py (measured on CPU). A
    # device kind the table lacks trains without MFU unless this is set.
    config.train.peak_flops = ml_collections.FieldReference(None, field_type=float)

    config.optim = ml_collections.ConfigDict()
    optim = OptimConfig()
    config.optim.name = optim.name  # adamw | adafactor
    config.optim.learning_rate = 1e-3  # peak learning rate
    # rsqrt (T5's) does not depend on the run's length, so extending train.steps continues the
    # same schedule; cosine / linear / wsd decay over optim.total_steps.
    config.optim.schedule = "rsqrt"  # rsqrt | cosine | linear | constant | wsd
    config.optim.warmup_steps = 100
    config.optim.total_steps = ml_collections.FieldReference(None, field_type=int)  # None: steps
    config.optim.final_lr_fraction = optim.final_lr_fraction
    config.optim.decay_fraction = optim.decay_fraction  # wsd: fraction of steps that decays
    config.optim.b1 = optim.b1
    config.optim.b2 = optim.b2
    config.optim.eps = optim.eps
    config.optim.weight_decay = optim.weight_decay  # decoupled; kernels only
    config.optim.decay_embeddings = optim.decay_embeddings
    config.optim.grad_clip_norm = optim.grad_clip_norm  # 0 disables
    # With model.param_dtype=bfloat16 the optimizer updates a float32 copy of the parameters and
    # stores it rounded; none: it updates the bfloat16 parameters (small updates round away).
    config.optim.master_dtype = optim.master_dtype  # float32 | none
    # optim.name=adafactor: T5's settings by default (t5x / Mesh TensorFlow Adafactor; T5 also
    # used learning_rate 1e-2, schedule rsqrt, weight_decay 0 and grad_clip_norm 0).
    config.optim.adafactor = ml_collections.ConfigDict()
    adafactor = AdafactorConfig()
    config.optim.adafactor.multiply_by_parameter_scale = adafactor.multiply_by_parameter_scale
    config.optim.adafactor.decay_rate = adafactor.decay_rate  # second moment: 1 - step^-rate
    config.optim.adafactor.clipping_threshold = adafactor.clipping_threshold  # 0 disables
    # First-moment EMA rate; None: no first moment (T5).
    config.optim.adafactor.momentum = ml_collections.FieldReference(None, field_type=float)
    config.optim.adafactor.factored = adafactor.factored  # row / column second moments
    config.optim.adafactor.min_dim_size_to_factor = adafactor.min_dim_size_to_factor
    config.optim.adafactor.eps = adafactor.eps

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 500  # also saved at the end and on SIGTERM / SIGINT
    config.checkpoint.keep = 3  # newest checkpoints kept
    config.checkpoint.async_save = True  # write in the background while training goes on

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # data-parallel axis size; -1 = all remaining devices
    config.mesh.fsdp = 1  # parameter-sharding (ZeRO-3) axis size
    config.mesh.tensor = 1  # tensor-parallel axis size
    # Multi-slice TPU: how many slices the data / fsdp axis spans (over DCN; the rest of the axis
    # is inside each slice). Their product must be the number of slices; 1, 1: one slice.
    config.mesh.dcn_data = 1
    config.mesh.dcn_fsdp = 1
    # Logical axis -> mesh axes, as `logical=mesh[+mesh...]` items joined by commas, e.g.
    # --config.mesh.rules='heads=,mlp=,activation_mlp=' (an empty right side replicates; `+`
    # shards over several mesh axes). Logical axes left out keep the default mapping below.
    config.mesh.rules = sharding.format_rules(sharding.DEFAULT_RULES)
    return config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The `train` section."""

    steps: int = 1000
    batch_size: int = 32
    micro_batches: int = 1
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 10
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    peak_flops: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "micro_batches", "log_every", "eval_batches"):
            _need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                  f"train.{name}", getattr(self, name), "a positive integer")
        _need(isinstance(self.eval_every, int) and self.eval_every >= 0, "train.eval_every",
              self.eval_every, "a non-negative integer (0: evaluate at the end only)")
        _need(self.batch_size % self.micro_batches == 0, "train.micro_batches",
              self.micro_batches, f"a divisor of train.batch_size={self.batch_size}")
        _need(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", self.label_smoothing,
              "a value in [0, 1)")
        _need(self.z_loss >= 0.0, "train.z_loss", self.z_loss, "a non-negative number")
        _need(self.peak_flops is None or self.peak_flops > 0, "train.peak_flops", self.peak_flops,
              "None (the device table) or a positive FLOP/s per device")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """The `checkpoint` section."""

    every_steps: int = 500
    keep: int = 3
    async_save: bool = True

    def __post_init__(self) -> None:
        _need(isinstance(self.every_steps, int) and self.every_steps >= 1,
              "checkpoint.every_steps", self.every_steps, "a positive integer")
        _need(isinstance(self.keep, int) and self.keep >= 1, "checkpoint.keep", self.keep,
              "a positive integer")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A resolved, validated run: every section typed."""

    seed: int
    objective: str
    objective_options: dict[str, Any]
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    optim: OptimConfig
    checkpoint: CheckpointConfig
    mesh: tuple[int, int, int]  # (data, fsdp, tensor) as configured (-1 unresolved)
    dcn: tuple[int, int] = (1, 1)  # (dcn_data, dcn_fsdp): slices along data / fsdp
    rules: sharding.Rules = sharding.DEFAULT_RULES  # logical axis -> mesh axes


class ConfigError(ValueError):
    """An invalid config value; the message names the field, the value and what is valid."""


def _need(ok: bool, field: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{field}={value!r} is invalid: expected {valid}.")


def _section(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
    section = config.get(name)
    if section is None:
        return {}
    return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def _typed(cls: type, values: dict[str, Any], prefix: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    _need(not unknown, f"{prefix}.{unknown[0] if unknown else ''}", values.get(
        unknown[0]) if unknown else None, "one of the known fields: " + ", ".join(sorted(fields)))
    try:
        return cls(**values)
    except TypeError as error:  # a value of the wrong type reaching a comparison
        raise ValueError(f"{prefix}: {error}") from None


def parse_denoisers(spec: str) -> tuple[objectives_lib.Denoiser, ...]:
    """'default' or 'span:MEAN:DENSITY:MODE[:WEIGHT],prefix:MODE[:WEIGHT],...' -> Denoisers."""
    if spec == "default":
        return objectives_lib.DEFAULT_UL2_DENOISERS
    denoisers = []
    for item in str(spec).split(","):
        parts = item.strip().split(":")
        try:
            if parts[0] == "span" and len(parts) in (4, 5):
                weight = float(parts[4]) if len(parts) == 5 else 1.0
                denoisers.append(objectives_lib.Denoiser(
                    "span", float(parts[1]), float(parts[2]), parts[3], weight))
            elif parts[0] == "prefix" and len(parts) in (2, 3):
                weight = float(parts[2]) if len(parts) == 3 else 1.0
                denoisers.append(objectives_lib.Denoiser("prefix", None, None, parts[1], weight))
            else:
                raise ValueError("expected span:MEAN:DENSITY:MODE[:WEIGHT] or prefix:MODE[:WEIGHT]")
        except ValueError as error:
            raise ValueError(f"objectives.ul2.denoisers={spec!r} is invalid at {item!r}: "
                             f"{error}") from None
    return tuple(denoisers)


def objective_options(config: ml_collections.ConfigDict, objective: str) -> dict[str, Any]:
    """The user-set options of `objective` (vocabulary-derived ones are added by the pipeline),
    each checked by the objective itself; an error names `objectives.<name>.<field>`."""
    section = _section(config, "objectives").get(objective, {})
    known = OBJECTIVE_OPTIONS[objective]
    unknown = sorted(set(section) - set(known))
    _need(not unknown, f"objectives.{objective}.{unknown[0] if unknown else ''}", None,
          "one of: " + ", ".join(sorted(known)))
    options = {**known, **section}
    if objective == "ul2":
        options = {"denoisers": parse_denoisers(options["denoisers"])}
    # Check with a stand-in vocabulary (the byte one's ids); the pipeline re-checks with the real.
    from jaxlm.data.tokenizer import ByteVocabulary

    try:
        objectives_lib.get_objective(
            objective, **objectives_lib.objective_vocab_kwargs(objective, ByteVocabulary()),
            **options)
    except ValueError as error:
        message = str(error)
        field = message.split()[0].split("=")[0] if message else ""
        if field in section:
            raise ValueError(f"objectives.{objective}.{field}={section[field]!r} is invalid: "
                             f"{message}") from None
        raise ValueError(f"objectives.{objective}: {message}") from None
    return options


def vocabulary_size(data: DataConfig) -> int:
    """The data vocabulary's size, known without training it."""
    if data.vocab == "byte":
        from jaxlm.data.tokenizer import ByteVocabulary
        return ByteVocabulary().vocab_size
    if data.vocab == "sentencepiece":
        _need(isinstance(data.vocab_size, int) and data.vocab_size > 0, "data.vocab_size",
              data.vocab_size, "a positive int (required with data.vocab='sentencepiece')")
        return int(data.vocab_size)
    from jaxlm.data.tokenizer import get_vocabulary
    try:
        return get_vocabulary(data.vocab).vocab_size
    except (OSError, ValueError) as error:
        raise ValueError(f"data.vocab={data.vocab!r} is invalid: {error}") from None


def model_config(config: ml_collections.ConfigDict, vocab_size: int | None = None) -> ModelConfig:
    """The validated, frozen model hyperparameters of a run config.

    model.family None -> the objective's natural family; model.vocab_size None -> `vocab_size`.
    """
    section = _section(config, "model")
    objective = config.get("objective", "clm")
    if section.get("family") is None and section.get("preset") not in _reference_presets():
        section["family"] = NATURAL_FAMILY.get(objective, "decoder")
    if section.get("vocab_size") is None and vocab_size is not None:
        section["vocab_size"] = vocab_size
    family = section.get("family") or NATURAL_FAMILY.get(objective, "decoder")
    for field, value in objectives_lib.model_defaults(objective, family).items():
        if section.get(field) is None:  # what the objective's features need (NSP's head)
            section[field] = value
    return model_config_from(section)


def _reference_presets() -> tuple[str, ...]:
    from jaxlm.models.presets import REFERENCE
    return tuple(REFERENCE)


def resolve(config: ml_collections.ConfigDict) -> RunConfig:
    """Checks every section that can be checked without devices or data; see the module doc.

    Raises ConfigError (a ValueError) naming the field, the value and what would be valid.
    """
    try:
        return _resolve(config)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _resolve(config: ml_collections.ConfigDict) -> RunConfig:
    objective = config.get("objective")
    _need(objective in objectives_lib.OBJECTIVES, "objective", objective,
          "one of " + ", ".join(objectives_lib.OBJECTIVES))
    _need(isinstance(config.get("seed"), int), "seed", config.get("seed"), "an integer")
    for axis in ("data", "fsdp", "tensor"):
        value = config.mesh[axis]
        _need(isinstance(value, int) and (value == -1 or value > 0), f"mesh.{axis}", value,
              "a positive size or -1")
    dcn, rules = _mesh_extras(config)
    train = _typed(TrainConfig, _section(config, "train"), "train")
    data = _typed(DataConfig, {**_section(config, "data"), "seed": config.seed}, "data")
    data_vocab = vocabulary_size(data)  # loads a .model file: once
    model = model_config(config, data_vocab)
    _need(model.vocab_size >= data_vocab, "model.vocab_size", model.vocab_size,
          f"at least the data vocabulary's size {data_vocab}")
    optim_values = _section(config, "optim")
    if optim_values.get("total_steps") is None:
        optim_values["total_steps"] = train.steps
    optim_values["adafactor"] = _typed(AdafactorConfig, optim_values.get("adafactor") or {},
                                       "optim.adafactor")
    optim = _typed(OptimConfig, optim_values, "optim")
    checkpoint = _typed(CheckpointConfig, _section(config, "checkpoint"), "checkpoint")
    return RunConfig(seed=config.seed, objective=objective,
                     objective_options=objective_options(config, objective), model=model,
                     data=data, train=train, optim=optim, checkpoint=checkpoint,
                     mesh=(config.mesh.data, config.mesh.fsdp, config.mesh.tensor), dcn=dcn,
                     rules=rules)


def _mesh_extras(config: ml_collections.ConfigDict) -> tuple[tuple[int, int], sharding.Rules]:
    """(dcn_data, dcn_fsdp) and the parsed `mesh.rules`, checked against the mesh axes."""
    dcn = (config.mesh.get("dcn_data", 1), config.mesh.get("dcn_fsdp", 1))
    for axis, across in zip(("data", "fsdp"), dcn):
        _need(isinstance(across, int) and across >= 1, f"mesh.dcn_{axis}", across,
              "a positive number of slices")
        size = config.mesh[axis]
        _need(size == -1 or size % across == 0, f"mesh.dcn_{axis}", across,
              f"a divisor of mesh.{axis}={size}")
    rules = config.mesh.get("rules")
    return dcn, (sharding.DEFAULT_RULES if rules is None else sharding.parse_rules(rules))


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
    """`resolve(config).model`: kept for callers that only need the model."""
    return resolve(config).model
