"""Model hyperparameters: a frozen dataclass, validated at construction, built from the config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxlm.conventions import FAMILIES

POSITIONS = ("learned", "sinusoidal", "rotary", "relative", "none")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
# Gated variants are spelled as their common names; they set `mlp_gated` with the base activation.
GATED_ALIASES = {"swiglu": "silu", "geglu": "gelu", "geglu_tanh": "gelu_tanh"}
ATTENTION_IMPLS = ("auto", "xla", "dot_product", "splash")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
INITS = ("normal", "fan_in")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one Transformer; every option a researcher switches without editing code."""

    family: str = "decoder"  # decoder | encoder | encoder_decoder
    vocab_size: int = 32128
    d_model: int = 512
    num_heads: int = 8
    num_kv_heads: int | None = None  # grouped-query attention; None = num_heads
    head_dim: int | None = None  # None = d_model // num_heads
    d_ff: int = 2048
    num_layers: int = 6  # encoder layers, or decoder layers of a decoder-only model
    num_decoder_layers: int | None = None  # encoder_decoder only; None = num_layers
    max_len: int = 1024  # longest sequence learned positions allow
    position: str = "rotary"
    rotary_base: float = 10000.0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    norm: str = "rmsnorm"
    norm_position: str = "pre"
    norm_eps: float = 1e-6
    norm_bias: bool = False  # LayerNorm bias (RMSNorm never has one)
    embedding_norm: bool = False  # norm after the embeddings (BERT)
    final_norm: bool = True  # norm after the last block (pre-LN models)
    mlp_activation: str = "gelu_tanh"
    mlp_gated: bool = False
    use_bias: bool = False  # biases of the dense layers
    attention_logit_scale: bool = True  # False: T5 folds 1/sqrt(head_dim) into the query init
    # auto: splash on TPU where it applies, cuDNN (jax.nn.dot_product_attention) on GPUs in 16-bit,
    # else xla (einsum)
    attention_impl: str = "auto"  # auto | xla | dot_product | splash
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    tie_embeddings: bool = True
    scale_tied_logits: bool = False  # T5 v1.0: logits of tied embeddings scaled by d_model**-0.5
    output_bias: bool = False  # BERT's MLM decoder bias
    mlm_head_transform: bool = False  # BERT: dense + gelu + LayerNorm before the output embedding
    mlm_head_activation: str = "gelu"
    num_token_types: int = 0  # BERT segment embeddings (2); 0 = none
    # Encoder-only: a pooled first-token classification head (BERT's pooler: dense + tanh, then
    # a linear layer) with this many classes, e.g. 2 for next-sentence prediction; 0 = none.
    classifier_classes: int = 0
    init: str = "normal"  # normal(init_std) | fan_in (T5's variance scaling)
    init_std: float = 0.02
    embed_init_std: float = 0.02
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    scan_layers: bool = True
    # Saving only the weight matmuls' outputs and recomputing the rest (norms, softmax,
    # activations) in the backward pass was faster than saving everything on both CPU and GPU
    # (docs/performance.md) and keeps a third of the activation memory.
    remat_policy: str = "dots_with_no_batch_dims"

    def __post_init__(self) -> None:
        if self.mlp_activation in GATED_ALIASES:
            object.__setattr__(self, "mlp_gated", True)
            object.__setattr__(self, "mlp_activation", GATED_ALIASES[self.mlp_activation])
        _check_choice("family", self.family, FAMILIES)
        _check_choice("position", self.position, POSITIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("mlp_activation", self.mlp_activation, ACTIVATIONS + tuple(GATED_ALIASES))
        _check_choice("mlm_head_activation", self.mlm_head_activation, ACTIVATIONS)
        _check_choice("attention_impl", self.attention_impl, ATTENTION_IMPLS)
        _check_choice("remat_policy", self.remat_policy, REMAT_POLICIES)
        _check_choice("init", self.init, INITS)
        _check_choice("dtype", self.dtype, tuple(DTYPES))
        _check_choice("param_dtype", self.param_dtype, tuple(DTYPES))
        for name in ("vocab_size", "d_model", "num_heads", "d_ff", "num_layers", "max_len"):
            if getattr(self, name) <= 0:
                _fail(name, getattr(self, name), "a positive integer")
        if self.head_dim is None and self.d_model % self.num_heads:
            _fail("d_model", self.d_model, f"a multiple of model.num_heads={self.num_heads} "
                  "(or set model.head_dim explicitly)")
        if self.num_heads % self.kv_heads:
            _fail("num_kv_heads", self.num_kv_heads,
                  f"a divisor of model.num_heads={self.num_heads}")
        if self.position == "rotary" and self.head_size % 2:
            _fail("head_dim", self.head_size, "an even number for rotary positions")
        if self.position == "relative" and self.relative_buckets < 2:
            _fail("relative_buckets", self.relative_buckets, "at least 2")
        for name in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                _fail(name, getattr(self, name), "a rate in [0, 1)")
        if self.classifier_classes < 0 or (self.classifier_classes and self.family != "encoder"):
            _fail("classifier_classes", self.classifier_classes,
                  "0, or a positive number of classes with model.family='encoder'")
        if self.family != "encoder_decoder" and self.num_decoder_layers is not None:
            _fail("num_decoder_layers", self.num_decoder_layers,
                  "None unless model.family='encoder_decoder'")
        if self.scale_tied_logits and not self.tie_embeddings:
            _fail("scale_tied_logits", True, "False when model.tie_embeddings=False")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.d_model // self.num_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.dtype]

    @property
    def weight_dtype(self) -> Any:
        return DTYPES[self.param_dtype]

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _check_choice(field: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        _fail(field, value, "one of " + ", ".join(valid))


def _fail(field: str, value: Any, valid: str) -> None:
    raise ValueError(f"model.{field}={value!r} is invalid: expected {valid}.")


FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# The Python type of each field ('int | None' -> int), for typed command-line overrides.
FIELD_TYPES = {f.name: {"int": int, "float": float, "bool": bool, "str": str}[
    str(f.type).split("|")[0].strip()] for f in dataclasses.fields(ModelConfig)}


def model_config_from(section: Mapping[str, Any]) -> ModelConfig:
    """Builds a ModelConfig from the `model` config section: the preset, then every non-None field.

    Unknown keys are refused so a typo (`--config.model.num_head=4`) cannot pass silently.
    """
    from jaxlm.models.presets import get_preset  # presets import this module

    values = dict(section)
    preset = values.pop("preset", None)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"model.{unknown[0]} is not a model field; valid fields: "
                         + ", ".join(FIELDS))
    overrides = {k: v for k, v in values.items() if v is not None}
    if preset:
        return get_preset(preset, values.get("family")).replace(**overrides)
    return ModelConfig(**overrides)
