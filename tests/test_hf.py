"""jaxlm.hf against transformers' PyTorch models: import, export and round trips, logits to 1e-4."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

# transformers is only the PyTorch (and Flax) reference here: keep it from importing TensorFlow,
# which costs seconds of the test budget.
os.environ.setdefault("USE_TF", "0")
import transformers  # noqa: E402
from flax.serialization import msgpack_serialize
from flax.traverse_util import unflatten_dict
from safetensors.numpy import load_file, save_file

from jaxlm.hf import from_hf, to_hf
from jaxlm.models import build_model, get_preset, init_params, stack_layers

TOL = 1e-4
VOCAB = 128
# Init std 0.2 (not 0.02) so that attention is far from uniform and a swapped or untransposed
# query / key would show in the logits.
HF_MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64,
        initializer_range=0.2)),
    "bert": lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
        initializer_range=0.2)),
    # v1.0: relu, tied and scaled logits; an uneven decoder depth checks num_decoder_layers.
    "t5_v1_0": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="relu", tie_word_embeddings=True)),
    # v1.1: gated-gelu, untied lm_head; head_dim * heads != d_model.
    "t5_v1_1": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
}


def _randomize(model: torch.nn.Module) -> None:
    """Random norms and biases too (HF inits them to 1 / 0, which would hide a mix-up)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in ("LayerNorm", "ln_", "layer_norm")) or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """name -> (torch model, folder written by save_pretrained)."""
    out = {}
    for i, (name, make) in enumerate(HF_MODELS.items()):
        torch.manual_seed(i)
        model = make()
        _randomize(model)
        model.eval()
        path = str(tmp_path_factory.mktemp(name))
        model.save_pretrained(path, safe_serialization=True)
        out[name] = (model, path)
    return out


def _inputs(name: str, seed: int = 0):
    """(jaxlm batch, torch kwargs, mask of output positions to compare)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (2, 10))
    if name == "gpt2":
        return ({"decoder_input_tokens": ids}, {"input_ids": torch.tensor(ids)},
                np.ones(ids.shape, bool))
    ids[1, 6:] = 0  # padding (id 0) on the second row
    valid = ids != 0
    if name == "bert":
        types = rng.integers(0, 2, ids.shape)
        return ({"encoder_input_tokens": ids, "encoder_token_types": types},
                {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(valid),
                 "token_type_ids": torch.tensor(types)}, valid)  # padded rows are unspecified
    dec = rng.integers(3, VOCAB, (2, 7))
    dec[:, 0] = 0  # T5 starts the decoder with pad
    return ({"encoder_input_tokens": ids, "decoder_input_tokens": dec},
            {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(valid),
             "decoder_input_ids": torch.tensor(dec)}, np.ones(dec.shape, bool))


def _torch_logits(model, kwargs) -> np.ndarray:
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


def _jaxlm_logits(model, params, batch) -> np.ndarray:
    return np.asarray(jax.jit(model.apply)({"params": params}, batch))


def _max_err(name, model, params, torch_model) -> float:
    batch, kwargs, keep = _inputs(name)
    out, ref = _jaxlm_logits(model, params, batch), _torch_logits(torch_model, kwargs)
    assert out.shape == ref.shape
    return float(np.abs(out - ref)[keep].max())


# Scanned and unrolled forward passes for GPT-2 and BERT; one of each for T5 (compiles are slow),
# whose other layout is checked as the exact restacking of the same params.
@pytest.mark.parametrize("name,scan_layers", [
    ("gpt2", True), ("gpt2", False), ("bert", True), ("bert", False), ("t5_v1_0", False),
    ("t5_v1_1", True)])
def test_from_hf_safetensors_matches_transformers(hf_dirs, name, scan_layers):
    torch_model, path = hf_dirs[name]
    model, params = from_hf(path, scan_layers=scan_layers)
    assert model.cfg.scan_layers == scan_layers
    stack = params["decoder" if "decoder" in params else "encoder"]
    assert ("layers" in stack) == scan_layers and ("layers_0" in stack) != scan_layers
    assert _max_err(name, model, params, torch_model) < TOL
    other_model, other = from_hf(path, scan_layers=not scan_layers)
    assert other_model.cfg == model.cfg.replace(scan_layers=not scan_layers)
    unrolled, scanned = (other, params) if scan_layers else (params, other)
    jax.tree.map(np.testing.assert_array_equal, stack_layers(unrolled), scanned)


def _flax_names_t5(state_dict) -> dict:
    """The PyTorch state dict renamed as transformers' FlaxT5 stores it (kernels [in, out],
    nn.Embed `embedding`, T5 layer norms keep `weight`); the stack embeddings are shared."""
    flat = {}
    for name, value in state_dict.items():
        if name.endswith("embed_tokens.weight"):
            continue
        key, x = tuple(name.split(".")), value.numpy()
        if key[0] == "shared" or key[-2] == "relative_attention_bias":
            key = key[:-1] + ("embedding",)
        elif "layer_norm" not in key[-2]:
            key, x = key[:-1] + ("kernel",), x.T
        flat[key] = np.ascontiguousarray(x)
    return unflatten_dict(flat)


def _write_flax_checkpoint(torch_model, pt_dir, out_dir) -> str:
    """A real flax_model.msgpack from transformers' Flax classes. transformers 4.57's FlaxT5 calls
    jnp.clip(a_max=...), which the installed jax no longer accepts, so for T5 alone (and only on
    that TypeError) the checkpoint is written here with HF's Flax names instead."""
    cls = getattr(transformers, "Flax" + type(torch_model).__name__)
    try:
        cls.from_pretrained(pt_dir, from_pt=True).save_pretrained(out_dir)
        return "transformers"
    except TypeError as e:
        if "T5" not in cls.__name__ or "a_max" not in str(e):
            raise
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(pt_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(out_dir, "flax_model.msgpack"), "wb") as f:
        f.write(msgpack_serialize(_flax_names_t5(torch_model.state_dict())))
    return "manual"


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5_v1_1"])
def test_from_hf_flax_msgpack_matches_transformers(hf_dirs, tmp_path, name):
    torch_model, path = hf_dirs[name]
    route = _write_flax_checkpoint(torch_model, path, str(tmp_path))
    assert route == "transformers" or name.startswith("t5")
    assert os.listdir(tmp_path).count("flax_model.msgpack") == 1
    assert "model.safetensors" not in os.listdir(tmp_path)
    model, params = from_hf(str(tmp_path), scan_layers=False)
    # The same params as the safetensors import, whose logits match transformers (test above).
    pt_model, from_pt = from_hf(path, scan_layers=False)
    assert model.cfg == pt_model.cfg
    jax.tree.map(np.testing.assert_array_equal, params, from_pt)


AUTO = {"gpt2": transformers.AutoModelForCausalLM, "bert": transformers.AutoModelForMaskedLM,
        "t5_v1_0": transformers.AutoModelForSeq2SeqLM,
        "t5_v1_1": transformers.AutoModelForSeq2SeqLM}


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_to_hf_round_trip(hf_dirs, tmp_path, name):
    torch_model, path = hf_dirs[name]
    model, params = from_hf(path, scan_layers=True)
    to_hf(model, params, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["architectures"] == torch_model.config.architectures
    reloaded = AUTO[name].from_pretrained(str(tmp_path)).eval()
    assert type(reloaded) is type(torch_model)
    _, kwargs, keep = _inputs(name, seed=1)
    err = np.abs(_torch_logits(reloaded, kwargs) - _torch_logits(torch_model, kwargs))[keep].max()
    assert err < TOL
    # Every tensor transformers holds is the original one (nothing re-initialised).
    for key, value in torch_model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    _, again = from_hf(str(tmp_path), scan_layers=True)
    jax.tree.map(np.testing.assert_array_equal, again, params)


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
    ("decoder", transformers.AutoModelForCausalLM, NATIVE_GPT2),
    ("encoder", transformers.AutoModelForMaskedLM, dict(
        NATIVE_GPT2, norm_position="post", embedding_norm=True, final_norm=False,
        mlp_activation="gelu", mlm_head_transform=True, output_bias=True, num_token_types=2)),
    ("encoder_decoder", transformers.AutoModelForSeq2SeqLM, dict(
        vocab_size=VOCAB, d_model=32, num_heads=4, head_dim=8, d_ff=48, position="relative",
        relative_buckets=8, relative_max_distance=16, attention_logit_scale=False,
        mlp_activation="swiglu", tie_embeddings=False, num_decoder_layers=1)),
])
def test_native_jaxlm_model_exports(tmp_path, family, auto, changes):
    cfg = get_preset("tiny", family).replace(**changes)  # scanned, boxed params: both accepted
    model = build_model(cfg)
    params = _random_boxed_params(model)
    leaves = nn.meta.unbox(params)
    to_hf(model, params, str(tmp_path))
    hf_model = auto.from_pretrained(str(tmp_path)).eval()
    name = {"decoder": "gpt2", "encoder": "bert", "encoder_decoder": "t5_v1_1"}[family]
    assert _max_err(name, model, leaves, hf_model) < TOL
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


def test_from_hf_refuses_bad_inputs(hf_dirs, tmp_path):
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

    _, path = hf_dirs["gpt2"]
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


def test_tied_lm_head_copy_is_accepted(hf_dirs, tmp_path):
    """Older GPT-2 checkpoints also store lm_head.weight (tied to wte): not an unused tensor."""
    _, path = hf_dirs["gpt2"]
    tensors = load_file(os.path.join(path, "model.safetensors"))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].copy()
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json")) as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    _, params = from_hf(str(tmp_path), scan_layers=False)
    _, reference = from_hf(path, scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, params, reference)
