"""Presets, parameter counts and configuration errors."""

import jax
import jax.numpy as jnp
import pytest

from jaxlm.models import (
    ModelConfig,
    build_model,
    dummy_batch,
    get_preset,
    init_params,
    model_config_from,
    param_count,
)

from ._util import FAMILIES, make, tiny

# Published sizes of the reference models (transformers' num_parameters() of GPT2LMHeadModel,
# BertForMaskedLM, T5ForConditionalGeneration for gpt2, bert-base-uncased, t5-base,
# google/t5-v1_1-small and google/t5-v1_1-base).
REFERENCE_COUNTS = {
    "gpt2": 124_439_808,
    "bert_base": 109_514_298,
    "t5_base": 222_903_552,
    "t5_v1_1_small": 76_961_152,
    "t5_v1_1_base": 247_577_856,
}


def abstract_count(cfg: ModelConfig) -> int:
    model = build_model(cfg)
    return param_count(jax.eval_shape(lambda: init_params(model, jax.random.key(0))))


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_reference_presets_have_the_published_parameter_counts(name):
    assert abstract_count(get_preset(name)) == REFERENCE_COUNTS[name]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_preset_is_well_under_a_million_non_embedding_params(family):
    cfg = get_preset("tiny", family)
    non_embedding = abstract_count(cfg) - cfg.vocab_size * cfg.d_model
    assert 0 < non_embedding < 500_000


@pytest.mark.parametrize("name", ["small", "base", "large"])
def test_generic_presets_grow_with_size(name):
    counts = [abstract_count(get_preset(name, f)) for f in FAMILIES]
    # Encoder-decoder has two stacks plus cross-attention: the biggest of the three.
    assert counts[2] > counts[0] == counts[1] > 0


def test_config_section_builds_preset_with_overrides():
    cfg = model_config_from({"preset": "tiny", "family": "encoder", "num_layers": 3,
                             "d_model": None, "mlp_activation": "swiglu"})
    assert (cfg.family, cfg.num_layers, cfg.d_model) == ("encoder", 3, 64)
    assert cfg.mlp_gated and cfg.mlp_activation == "silu"


@pytest.mark.parametrize("changes,field", [
    (dict(position="alibi"), "model.position"),
    (dict(norm="batchnorm"), "model.norm"),
    (dict(mlp_activation="tanh"), "model.mlp_activation"),
    (dict(attention_impl="flash"), "model.attention_impl"),
    (dict(remat_policy="sometimes"), "model.remat_policy"),
    (dict(d_model=100, num_heads=8), "model.d_model"),
    (dict(num_heads=8, num_kv_heads=3), "model.num_kv_heads"),
    (dict(dropout_rate=1.5), "model.dropout_rate"),
    (dict(family="seq2seq"), "model.family"),
    (dict(vocab_size=0), "model.vocab_size"),
])
def test_invalid_options_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ModelConfig(**changes)


def test_unknown_preset_and_field_are_refused():
    with pytest.raises(ValueError, match=r"model\.preset='gpt5'.*gpt2"):
        model_config_from({"preset": "gpt5"})
    with pytest.raises(ValueError, match=r"model\.num_head is not a model field"):
        model_config_from({"preset": "tiny", "num_head": 4})
    with pytest.raises(ValueError, match=r"model\.family='decoder'.*bert_base"):
        model_config_from({"preset": "bert_base", "family": "decoder"})


def test_sequence_longer_than_learned_positions_is_refused():
    cfg = tiny("decoder", position="learned", max_len=16)
    model, params = make(cfg)
    with pytest.raises(ValueError, match=r"model\.max_len=16"):
        model.apply({"params": params}, dummy_batch(cfg, 1, 17))


@pytest.mark.parametrize("family,missing", [("decoder", "decoder_input_tokens"),
                                            ("encoder", "encoder_input_tokens"),
                                            ("encoder_decoder", "decoder_input_tokens")])
def test_missing_batch_feature_is_named(family, missing):
    cfg = tiny(family)
    model, params = make(cfg)
    batch = {k: v for k, v in dummy_batch(cfg, 1, 4).items() if k != missing}
    batch["unrelated"] = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match=missing):
        model.apply({"params": params}, batch)
