"""jaxlm.hf against transformers: import, export and round trips, logits to 1e-4.

The PyTorch side is golden data in tests/hf_reference/ (save_pretrained folders of tiny random
models and transformers' PyTorch logits, written by tests/hf_reference/make_reference.py), so the
default test install needs no torch (`python tests/hf_reference/make_reference.py --check` checks
that data against live PyTorch). transformers' Flax models (transformers < 5, on JAX) are the
live reference. transformers is imported inside the tests that use it, so that collection never
depends on it.
"""

import json
import os
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.serialization import msgpack_serialize
from flax.traverse_util import unflatten_dict
from safetensors.numpy import load_file, save_file

from jaxlm.hf import from_hf, to_hf
from jaxlm.models import build_model, get_preset, init_params, stack_layers
from tests.hf_reference.make_reference import (NAMES, TOL, VOCAB, architecture, hf_kwargs,
                                               load_reference, max_err)

# config.json fields that only training or bookkeeping read (jaxlm imports no dropout).
UNUSED_AT_INFERENCE = re.compile(
    r"pdrop|dropout|^initializer_|^_name_or_path$|^dtype$|^transformers_version$")


def _jaxlm_logits(model, params, batch) -> np.ndarray:
    return np.asarray(jax.jit(model.apply)({"params": params}, batch))


class _JnpWithClipAMax(types.ModuleType):
    """jax.numpy whose clip still takes a_min / a_max, which transformers 4.x's FlaxT5 passes and
    the installed jax no longer accepts."""

    def __getattr__(self, name):
        return getattr(jnp, name)

    @staticmethod
    def clip(x, a_min=None, a_max=None, **kwargs):
        return jnp.clip(x, a_min, a_max, **kwargs)


def _transformers(monkeypatch):
    """transformers, without TensorFlow (seconds of import) and with FlaxT5 runnable."""
    monkeypatch.setenv("USE_TF", "0")
    import transformers
    from transformers.models.t5 import modeling_flax_t5

    monkeypatch.setattr(modeling_flax_t5, "jnp", _JnpWithClipAMax("jax.numpy"))
    return transformers


# Scanned and unrolled forward passes for GPT-2 and BERT; one of each for T5 (compiles are slow),
# whose other layout is checked as the exact restacking of the same params.
@pytest.mark.parametrize("name,scan_layers", [
    ("gpt2", True), ("gpt2", False), ("bert", True), ("bert", False), ("t5_v1_0", False),
    ("t5_v1_1", True)])
def test_from_hf_safetensors_matches_pytorch_reference(name, scan_layers):
    path, batch, keep, ref = load_reference(name)
    model, params = from_hf(path, scan_layers=scan_layers)
    assert model.cfg.scan_layers == scan_layers
    stack = params["decoder" if "decoder" in params else "encoder"]
    assert ("layers" in stack) == scan_layers and ("layers_0" in stack) != scan_layers
    assert max_err(_jaxlm_logits(model, params, batch), ref, keep) < TOL
    other_model, other = from_hf(path, scan_layers=not scan_layers)
    assert other_model.cfg == model.cfg.replace(scan_layers=not scan_layers)
    unrolled, scanned = (other, params) if scan_layers else (params, other)
    jax.tree.map(np.testing.assert_array_equal, stack_layers(unrolled), scanned)


@pytest.mark.parametrize("name", NAMES)
def test_to_hf_reproduces_reference(monkeypatch, tmp_path, name):
    """Export of an import: the golden tensors exactly, and the config transformers builds."""
    transformers = _transformers(monkeypatch)
    path = load_reference(name)[0]
    model, params = from_hf(path, scan_layers=True)
    to_hf(model, params, str(tmp_path))
    golden, exported = (load_file(os.path.join(p, "model.safetensors")) for p in (path, tmp_path))
    assert sorted(exported) == sorted(golden)
    for key, value in golden.items():
        assert exported[key].dtype == value.dtype, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    assert architecture(str(tmp_path)) == architecture(path)
    want, got = (transformers.AutoConfig.from_pretrained(str(p)) for p in (path, tmp_path))
    assert type(got) is type(want)
    want, got = want.to_dict(), got.to_dict()
    for key, value in want.items():  # fields the golden config sets; unset ones take defaults
        if value is not None and not UNUSED_AT_INFERENCE.search(key):
            assert got.get(key) == value, key
    _, again = from_hf(str(tmp_path), scan_layers=True)
    jax.tree.map(np.testing.assert_array_equal, again, params)


def _flax_names_t5(tensors: dict[str, np.ndarray]) -> dict:
    """PyTorch T5 tensors renamed as transformers' FlaxT5 stores them (kernels [in, out], nn.Embed
    `embedding`, T5 layer norms keep `weight`); the stacks' embeddings are the shared one."""
    flat = {}
    for name, x in tensors.items():
        if name.endswith("embed_tokens.weight"):
            continue
        key = tuple(name.split("."))
        if key[0] == "shared" or key[-2] == "relative_attention_bias":
            key = key[:-1] + ("embedding",)
        elif "layer_norm" not in key[-2]:
            key, x = key[:-1] + ("kernel",), x.T
        flat[key] = np.ascontiguousarray(x)
    return unflatten_dict(flat)


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5_v1_1"])
def test_from_hf_flax_msgpack_matches_transformers_flax(monkeypatch, tmp_path, name):
    """transformers converts the golden folder to its Flax model and writes flax_model.msgpack;
    jaxlm imports the same params from it, and its logits are the Flax model's, live."""
    transformers = _transformers(monkeypatch)
    path, batch, keep, ref = load_reference(name)
    flax_class = getattr(transformers, "Flax" + architecture(path))
    flax_model = flax_class.from_pretrained(path, from_pt=True)
    flax_model.save_pretrained(str(tmp_path))
    assert "flax_model.msgpack" in os.listdir(tmp_path)
    assert "model.safetensors" not in os.listdir(tmp_path)
    model, params = from_hf(str(tmp_path), scan_layers=False)
    pt_model, from_pt = from_hf(path, scan_layers=False)
    assert model.cfg == pt_model.cfg
    jax.tree.map(np.testing.assert_array_equal, params, from_pt)
    live = np.asarray(flax_model(**hf_kwargs(batch)).logits)
    assert max_err(_jaxlm_logits(model, params, batch), live, keep) < TOL
    assert max_err(live, ref, keep) < TOL  # and the live reference agrees with the golden one


def test_from_hf_flax_msgpack_t5_names(tmp_path):
    """A flax_model.msgpack with FlaxT5's names written here (the shared embedding stored once,
    T5 norms under `weight`): the same params as the PyTorch-named import."""
    path = load_reference("t5_v1_0")[0]
    with open(os.path.join(path, "config.json")) as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    tensors = load_file(os.path.join(path, "model.safetensors"))
    with open(tmp_path / "flax_model.msgpack", "wb") as f:
        f.write(msgpack_serialize(_flax_names_t5(tensors)))
    _, params = from_hf(str(tmp_path), scan_layers=False)
    _, reference = from_hf(path, scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, params, reference)


NATIVE_GPT2 = dict(position="learned", norm="layernorm", use_bias=True, norm_bias=True,
                   mlp_activation="gelu_tanh", norm_eps=1e-5, vocab_size=VOCAB, d_model=32,
                   num_heads=4, d_ff=64, max_len=32)


def _random_boxed_params(model, seed=0):
    """Boxed (logically partitioned) params of random values, norms and biases included, made on
    the host from the abstract init (no compile)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
    return jax.tree.map(
        lambda box: box.replace_boxed(rng.normal(0, 0.2, box.value.shape).astype(np.float32)),
        abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))


@pytest.mark.parametrize("family,auto,changes", [
    ("decoder", "FlaxAutoModelForCausalLM", NATIVE_GPT2),
    ("encoder", "FlaxAutoModelForMaskedLM", dict(
        NATIVE_GPT2, norm_position="post", embedding_norm=True, final_norm=False,
        mlp_activation="gelu", mlm_head_transform=True, output_bias=True, num_token_types=2)),
    ("encoder_decoder", "FlaxAutoModelForSeq2SeqLM", dict(
        vocab_size=VOCAB, d_model=32, num_heads=4, head_dim=8, d_ff=48, position="relative",
        relative_buckets=8, relative_max_distance=16, attention_logit_scale=False,
        mlp_activation="swiglu", tie_embeddings=False, num_decoder_layers=1)),
])
def test_native_jaxlm_model_exports(monkeypatch, tmp_path, family, auto, changes):
    """A jaxlm-trained model's export loads in transformers (its Flax model, from the PyTorch-named
    safetensors) with the same logits."""
    transformers = _transformers(monkeypatch)
    cfg = get_preset("tiny", family).replace(**changes)  # scanned, boxed params: both accepted
    model = build_model(cfg)
    params = _random_boxed_params(model)
    leaves = nn.meta.unbox(params)
    to_hf(model, params, str(tmp_path))
    hf_model = getattr(transformers, auto).from_pretrained(str(tmp_path), from_pt=True)
    name = {"decoder": "gpt2", "encoder": "bert", "encoder_decoder": "t5_v1_1"}[family]
    _, batch, keep, _ = load_reference(name)
    live = np.asarray(hf_model(**hf_kwargs(batch)).logits)
    assert max_err(_jaxlm_logits(model, leaves, batch), live, keep) < TOL
    _, back = from_hf(str(tmp_path))
    jax.tree.map(np.testing.assert_array_equal, back, leaves)


@pytest.mark.parametrize("family,changes,option", [
    ("decoder", dict(NATIVE_GPT2, position="rotary"), "model.position='rotary'"),
    ("decoder", dict(NATIVE_GPT2, norm="rmsnorm"), "model.norm='rmsnorm'"),
    ("decoder", dict(NATIVE_GPT2, mlp_activation="swiglu"), "model.mlp_gated=True"),
    ("decoder", dict(NATIVE_GPT2, num_kv_heads=2), "model.num_kv_heads=2"),
    ("decoder", dict(NATIVE_GPT2, head_dim=4), "model.head_dim=4"),
    ("encoder", dict(NATIVE_GPT2, embedding_norm=True, final_norm=False, output_bias=True,
                     mlm_head_transform=True, num_token_types=2), "model.norm_position='pre'"),
    ("encoder_decoder", dict(position="relative", attention_logit_scale=False),
     "model.scale_tied_logits=False"),  # HF T5 always scales tied logits
])
def test_to_hf_refuses_unrepresentable_options(tmp_path, family, changes, option):
    cfg = get_preset("tiny", family).replace(**changes)
    with pytest.raises(ValueError, match=option.replace("(", r"\(")):
        to_hf(cfg, {}, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_from_hf_refuses_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        from_hf(str(tmp_path))  # empty folder
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, f)
    with pytest.raises(ValueError, match="model_type='llama'"):
        from_hf(str(tmp_path))
    for config, message in [
        ({"model_type": "t5", "feed_forward_proj": "gated-quick_gelu"}, "feed_forward_proj"),
        ({"model_type": "bert", "position_embedding_type": "relative_key"},
         "position_embedding_type='relative_key'"),
        ({"model_type": "bert", "hidden_act": "quick_gelu"}, "hidden_act='quick_gelu'")]:
        with open(tmp_path / "config.json", "w") as f:
            json.dump(config, f)
        with pytest.raises(ValueError, match=message):
            from_hf(str(tmp_path))
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "gpt2", "n_layer": 1}, f)
    with pytest.raises(ValueError, match="holds no weights"):
        from_hf(str(tmp_path))

    path = load_reference("gpt2")[0]
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    tensors = load_file(os.path.join(path, "model.safetensors"))
    cases = [
        ({**config, "scale_attn_by_inverse_layer_idx": True}, tensors,
         "scale_attn_by_inverse_layer_idx=True"),
        ({**config, "architectures": ["GPT2ForSequenceClassification"]}, tensors,
         "GPT2ForSequenceClassification"),
        ({**config, "n_inner": 96}, tensors, "'transformer.h.0.mlp.c_fc.weight' has shape"),
        (config, {**tensors, "score.weight": np.zeros((2, 32), np.float32)}, "score.weight"),
        (config, {k: v for k, v in tensors.items() if "ln_f.bias" not in k},
         "'transformer.ln_f.bias' is missing"),
    ]
    for i, (cfg_json, weights, message) in enumerate(cases):
        bad = tmp_path / f"bad{i}"
        bad.mkdir()
        with open(bad / "config.json", "w") as f:
            json.dump(cfg_json, f)
        save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            from_hf(str(bad))


def test_tied_lm_head_copy_is_accepted(tmp_path):
    """Older GPT-2 checkpoints also store lm_head.weight (tied to wte): not an unused tensor."""
    path = load_reference("gpt2")[0]
    tensors = load_file(os.path.join(path, "model.safetensors"))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].copy()
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json")) as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    _, params = from_hf(str(tmp_path), scan_layers=False)
    _, reference = from_hf(path, scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, params, reference)
