"""Pure Flax linen Transformer modules: decoder-only, encoder-only and encoder-decoder."""

from jaxlm.models.config import ModelConfig, model_config_from
from jaxlm.models.presets import PRESETS, get_preset
from jaxlm.models.transformer import (
    DecoderOnly,
    EncoderDecoder,
    EncoderOnly,
    build_model,
    dummy_batch,
    init_decode_cache,
    init_params,
    param_count,
    stack_layers,
    unstack_layers,
)

__all__ = [
    "DecoderOnly", "EncoderDecoder", "EncoderOnly", "ModelConfig", "PRESETS", "build_model",
    "dummy_batch", "get_preset", "init_decode_cache", "init_params", "model_config_from",
    "param_count", "stack_layers", "unstack_layers",
]
