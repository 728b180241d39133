"""The billion-parameter presets: published parameter counts, counted abstractly (no allocation)."""

import jax
import pytest

from jaxlm.models import build_model, get_preset, init_params, param_count

# Published counts: transformers' num_parameters() of LlamaForCausalLM (meta-llama/Llama-2-7b-hf)
# and T5ForConditionalGeneration (google/t5-v1_1-xxl). encoder_7b is this project's own shape
# (Llama 2 7B's blocks, T5's vocabulary, tied head): its count is documented in presets.py.
PUBLISHED = {
    "llama2_7b": 6_738_415_616,
    "t5_v1_1_xxl": 11_135_332_352,
    "encoder_7b": 6_607_867_904,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_large_presets_have_their_published_parameter_counts(name):
    model = build_model(get_preset(name))
    abstract = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
    assert param_count(abstract) == PUBLISHED[name]


def test_large_presets_fix_their_family():
    assert [get_preset(n).family for n in ("llama2_7b", "t5_v1_1_xxl", "encoder_7b")] == [
        "decoder", "encoder_decoder", "encoder"]
    with pytest.raises(ValueError, match="llama2_7b"):
        get_preset("llama2_7b", "encoder")
