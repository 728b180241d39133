"""Named architectures: generic sizes for every family and exact reference models."""

from __future__ import annotations

from jaxlm.models.config import FAMILIES, ModelConfig

# Generic sizes: a modern pre-LN recipe (RMSNorm, rotary, no biases), the same for every family so an
# objective comparison changes the objective and the family only.
_SIZES = {
    "tiny": dict(d_model=64, num_heads=4, d_ff=256, num_layers=2, vocab_size=384, max_len=512),
    "small": dict(d_model=512, num_heads=8, d_ff=2048, num_layers=6, max_len=2048),
    "base": dict(d_model=768, num_heads=12, d_ff=3072, num_layers=12, max_len=2048),
    "large": dict(d_model=1024, num_heads=16, d_ff=4096, num_layers=24, max_len=2048),
}

_GENERIC = dict(position="rotary", norm="rmsnorm", norm_position="pre", mlp_activation="gelu_tanh",
                use_bias=False, tie_embeddings=True, init="normal", init_std=0.02,
                embed_init_std=0.02)

_T5 = dict(family="encoder_decoder", vocab_size=32128, head_dim=64, position="relative",
           relative_buckets=32, relative_max_distance=128, norm="rmsnorm", norm_eps=1e-6,
           use_bias=False, attention_logit_scale=False, init="fan_in", embed_init_std=1.0,
           max_len=512)

_LLAMA2_7B = dict(d_model=4096, num_heads=32, d_ff=11008, num_layers=32, max_len=4096,
                  position="rotary", norm="rmsnorm", norm_eps=1e-5, mlp_activation="swiglu",
                  use_bias=False, init="normal", init_std=0.02, embed_init_std=0.02)

# Reference architectures, exactly as published (parameter counts asserted in the tests).
REFERENCE = {
    "gpt2": ModelConfig(
        family="decoder", vocab_size=50257, d_model=768, num_heads=12, d_ff=3072, num_layers=12,
        max_len=1024, position="learned", norm="layernorm", norm_eps=1e-5, norm_bias=True,
        mlp_activation="gelu_tanh", use_bias=True, tie_embeddings=True),
    "bert_base": ModelConfig(
        family="encoder", vocab_size=30522, d_model=768, num_heads=12, d_ff=3072, num_layers=12,
        max_len=512, position="learned", norm="layernorm", norm_eps=1e-12, norm_bias=True,
        norm_position="post", embedding_norm=True, final_norm=False, mlp_activation="gelu",
        use_bias=True, tie_embeddings=True, output_bias=True, mlm_head_transform=True,
        num_token_types=2),
    "t5_base": ModelConfig(**_T5, d_model=768, num_heads=12, d_ff=3072, num_layers=12,
                           mlp_activation="relu", tie_embeddings=True, scale_tied_logits=True),
    "t5_v1_1_small": ModelConfig(**_T5, d_model=512, num_heads=6, d_ff=1024, num_layers=8,
                                 mlp_activation="geglu_tanh", tie_embeddings=False),
    "t5_v1_1_base": ModelConfig(**_T5, d_model=768, num_heads=12, d_ff=2048, num_layers=12,
                                mlp_activation="geglu_tanh", tie_embeddings=False),
    # T5 v1.1 XXL (google/t5-v1_1-xxl): 24 + 24 layers, 64 heads of 64, GeGLU (tanh GELU), one
    # relative-position bias per stack, untied output head.
    "t5_v1_1_xxl": ModelConfig(**_T5, d_model=4096, num_heads=64, d_ff=10240, num_layers=24,
                               mlp_activation="geglu_tanh", tie_embeddings=False),
    # Llama 2 7B (meta-llama/Llama-2-7b-hf): pre-RMSNorm (eps 1e-5), rotary, SwiGLU, no biases,
    # untied embeddings and head.
    "llama2_7b": ModelConfig(**_LLAMA2_7B, family="decoder", vocab_size=32000,
                             tie_embeddings=False),
    # A 7B-class encoder for MLM: Llama 2 7B's blocks run bidirectionally (32 layers, d_model
    # 4096, 32 heads, SwiGLU 11008) with T5's 32128 vocabulary and the output head tied to the
    # embeddings (as BERT's): 6,607,867,904 parameters.
    "encoder_7b": ModelConfig(**_LLAMA2_7B, family="encoder", vocab_size=32128,
                              tie_embeddings=True),
}

PRESETS = tuple(_SIZES) + tuple(REFERENCE)


def get_preset(name: str, family: str | None = None) -> ModelConfig:
    """The preset `name`; generic sizes take `family` (default decoder), references fix their own."""
    if name in REFERENCE:
        preset = REFERENCE[name]
        if family is not None and family != preset.family:
            raise ValueError(f"model.family={family!r} is invalid for model.preset={name!r}, "
                             f"which is an {preset.family} model.")
        return preset
    if name not in _SIZES:
        raise ValueError(f"model.preset={name!r} is invalid: expected one of "
                         + ", ".join(PRESETS) + ".")
    family = family or "decoder"
    if family not in FAMILIES:
        raise ValueError(f"model.family={family!r} is invalid: expected one of "
                         + ", ".join(FAMILIES) + ".")
    return ModelConfig(family=family, **_GENERIC, **_SIZES[name])
