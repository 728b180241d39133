"""Import and export of Hugging Face GPT-2, BERT and T5 checkpoints, without torch or transformers.

    model, params = from_hf("path/to/hf_folder")          # config.json + model.safetensors
    to_hf(model, params, "path/to/out")                    # loads with transformers.from_pretrained

One table per family lists (hf_name, jaxlm_paths, n_in, transpose) rows; import and export both read
it. A row's jaxlm params are flattened to 2-D [in, out] (the first `n_in` axes are the input; n_in=0
flattens a bias to 1-D; None copies as is), concatenated along the output axis (GPT-2's packed
c_attn) and transposed for PyTorch's nn.Linear [out, in] layout (GPT-2's Conv1D is [in, out]).
HF Flax checkpoints (flax_model.msgpack) are renamed to the PyTorch names first.
"""

from __future__ import annotations

import json
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxlm import io
from jaxlm.models import (ModelConfig, build_model, dummy_batch, init_params, stack_layers,
                          unstack_layers)
from jaxlm.models.presets import REFERENCE

# (hf_name, jaxlm param paths, n_in, transpose); see the module docstring.
Row = tuple[str, tuple[str, ...], int | None, bool]

MODEL_TYPES = ("gpt2", "bert", "t5")
ARCHITECTURES = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),
    "bert": ("BertForMaskedLM", "BertForPreTraining", "BertModel"),
    "t5": ("T5ForConditionalGeneration",),
}
EXPORT_ARCHITECTURE = {"decoder": ("gpt2", "GPT2LMHeadModel"),
                       "encoder": ("bert", "BertForMaskedLM"),
                       "encoder_decoder": ("t5", "T5ForConditionalGeneration")}
# Tensors jaxlm has no use for: GPT-2's causal-mask buffers, position ids, BERT's pooler and NSP
# head, and the unused cross-attention bias that old T5 checkpoints carry.
IGNORED = re.compile(r"\.attn\.(masked_)?bias$|position_ids$|(^|\.)pooler\.|^cls\.seq_relationship"
                     r"\.|EncDecAttention\.relative_attention_bias\.")
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                  "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu"}
JAXLM_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu"}
QKV = ("query", "key", "value")


def _norm(hf: str, path: str, bias: bool = True) -> list[Row]:
    rows = [(f"{hf}.weight", (f"{path}/scale",), None, False)]
    return rows + [(f"{hf}.bias", (f"{path}/bias",), None, False)] if bias else rows


def _dense(hf: str, path: str, n_in: int = 1, transpose: bool = True,
           bias: bool = True) -> list[Row]:
    rows = [(f"{hf}.weight", (f"{path}/kernel",), n_in, transpose)]
    return rows + [(f"{hf}.bias", (f"{path}/bias",), 0, False)] if bias else rows


def gpt2_table(cfg: ModelConfig, prefix: str = "transformer.") -> list[Row]:
    p = prefix
    rows = [(p + "wte.weight", ("token_embed/embedding",), None, False),
            (p + "wpe.weight", ("decoder/position_embed/embedding",), None, False)]
    for i in range(cfg.num_layers):
        h, lay = f"{p}h.{i}.", f"decoder/layers_{i}/"
        att = lay + "self_attention/"
        rows += _norm(h + "ln_1", lay + "self_attention_norm") + [
            (h + "attn.c_attn.weight", tuple(f"{att}{n}/kernel" for n in QKV), 1, False),
            (h + "attn.c_attn.bias", tuple(f"{att}{n}/bias" for n in QKV), 0, False),
        ] + _dense(h + "attn.c_proj", att + "out", 2, False) + _norm(h + "ln_2", lay + "mlp_norm")
        rows += _dense(h + "mlp.c_fc", lay + "mlp/wi", 1, False)
        rows += _dense(h + "mlp.c_proj", lay + "mlp/wo", 1, False)
    rows += _norm(p + "ln_f", "decoder/final_norm")
    if not cfg.tie_embeddings:
        rows += _dense("lm_head", "head/lm_head", bias=False)
    return rows


def bert_table(cfg: ModelConfig, prefix: str = "bert.") -> list[Row]:
    e = prefix + "embeddings."
    rows = [(e + "word_embeddings.weight", ("token_embed/embedding",), None, False),
            (e + "position_embeddings.weight", ("encoder/position_embed/embedding",), None, False)]
    if cfg.num_token_types:
        rows.append((e + "token_type_embeddings.weight", ("encoder/token_type_embed/embedding",),
                     None, False))
    rows += _norm(e + "LayerNorm", "encoder/embedding_norm")
    for i in range(cfg.num_layers):
        h, lay = f"{prefix}encoder.layer.{i}.", f"encoder/layers_{i}/"
        for n in QKV:
            rows += _dense(f"{h}attention.self.{n}", f"{lay}self_attention/{n}")
        rows += _dense(h + "attention.output.dense", lay + "self_attention/out", n_in=2)
        rows += _norm(h + "attention.output.LayerNorm", lay + "self_attention_norm")
        rows += _dense(h + "intermediate.dense", lay + "mlp/wi")
        rows += _dense(h + "output.dense", lay + "mlp/wo")
        rows += _norm(h + "output.LayerNorm", lay + "mlp_norm")
    if cfg.mlm_head_transform:
        rows += _dense("cls.predictions.transform.dense", "head/transform")
        rows += _norm("cls.predictions.transform.LayerNorm", "head/transform_norm")
    if cfg.output_bias:
        rows.append(("cls.predictions.bias", ("head/output_bias",), None, False))
    if not cfg.tie_embeddings:
        rows += _dense("cls.predictions.decoder", "head/lm_head", bias=False)
    return rows


def t5_table(cfg: ModelConfig, prefix: str = "") -> list[Row]:
    rows = [("shared.weight", ("token_embed/embedding",), None, False)]
    mlp = ["wi_0", "wi_1"] if cfg.mlp_gated else ["wi"]
    for stack, num in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers)):
        rows.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                     (f"{stack}/relpos_bias/rel_embedding",), None, False))
        for i in range(num):
            h, lay = f"{stack}.block.{i}.layer.", f"{stack}/layers_{i}/"
            subs = [("SelfAttention", "self_attention")]
            subs += [("EncDecAttention", "cross_attention")] if stack == "decoder" else []
            for j, (hf_att, att) in enumerate(subs):
                for hf_n, n in zip("qkvo", QKV + ("out",)):
                    rows += _dense(f"{h}{j}.{hf_att}.{hf_n}", f"{lay}{att}/{n}",
                                   n_in=2 if n == "out" else 1, bias=False)
                rows += _norm(f"{h}{j}.layer_norm", f"{lay}{att}_norm", bias=False)
            j = len(subs)
            for n in mlp + ["wo"]:
                rows += _dense(f"{h}{j}.DenseReluDense.{n}", f"{lay}mlp/{n}", bias=False)
            rows += _norm(f"{h}{j}.layer_norm", f"{lay}mlp_norm", bias=False)
        rows += _norm(f"{stack}.final_layer_norm", f"{stack}/final_norm", bias=False)
    if not cfg.tie_embeddings:
        rows += _dense("lm_head", "head/lm_head", bias=False)
    return rows


TABLES = {"gpt2": gpt2_table, "bert": bert_table, "t5": t5_table}


def _aliases(model_type: str, cfg: ModelConfig, prefix: str) -> dict[str, str]:
    """Names HF may store beside (or instead of) a tied tensor: alias -> canonical name."""
    if model_type == "gpt2":
        return {"lm_head.weight": prefix + "wte.weight"} if cfg.tie_embeddings else {}
    if model_type == "bert":
        out = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
        if cfg.tie_embeddings:
            out["cls.predictions.decoder.weight"] = prefix + "embeddings.word_embeddings.weight"
        return out
    out = {f"{s}.embed_tokens.weight": "shared.weight" for s in ("encoder", "decoder")}
    return {**out, "lm_head.weight": "shared.weight"} if cfg.tie_embeddings else out


def _as_2d(shape: tuple[int, ...], n_in: int) -> tuple[int, ...]:
    if n_in == 0:
        return (int(np.prod(shape)),)
    return (int(np.prod(shape[:n_in])), int(np.prod(shape[n_in:])))


def _hf_shape(shapes: list[tuple[int, ...]], n_in: int | None, transpose: bool) -> tuple[int, ...]:
    if n_in is None:
        return tuple(shapes[0])
    flat = [_as_2d(s, n_in) for s in shapes]
    out = flat[0][:-1] + (sum(f[-1] for f in flat),)
    return out[::-1] if transpose else out


def _to_hf(arrays: list[np.ndarray], n_in: int | None, transpose: bool) -> np.ndarray:
    if n_in is None:
        return arrays[0]
    x = np.concatenate([a.reshape(_as_2d(a.shape, n_in)) for a in arrays], axis=-1)
    return x.T if transpose else x


def _from_hf(x: np.ndarray, shapes: list[tuple[int, ...]], n_in: int | None,
             transpose: bool) -> list[np.ndarray]:
    if n_in is None:
        return [x]
    x = x.T if transpose else x
    sizes = np.cumsum([_as_2d(s, n_in)[-1] for s in shapes])[:-1]
    return [part.reshape(s) for part, s in zip(np.split(x, sizes, axis=-1), shapes)]


def _jaxlm_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Unrolled param paths -> shapes, without allocating anything."""
    model = build_model(cfg.replace(scan_layers=False))
    tree = jax.eval_shape(lambda: init_params(model, jax.random.key(0), dummy_batch(cfg, 1, 1)))
    return {k: tuple(v.shape) for k, v in flatten_dict(nn.meta.unbox(tree), sep="/").items()}


def _get(c: dict, key: str, default: Any, allowed: tuple | None = None) -> Any:
    value = c.get(key, default)
    if allowed is not None and value not in allowed:
        raise ValueError(f"config.json {key}={value!r} has no jaxlm equivalent "
                         f"(supported: {', '.join(map(repr, allowed))}).")
    return value


def _activation(c: dict, key: str, default: str) -> str:
    return HF_ACTIVATIONS[_get(c, key, default, tuple(HF_ACTIVATIONS))]


def config_from_hf(c: dict, names: set[str] = frozenset()) -> ModelConfig:
    """A ModelConfig for an HF config.json dict (`names`: the checkpoint's tensor names)."""
    model_type = c.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"config.json model_type={model_type!r} is not supported: expected one of "
                         + ", ".join(MODEL_TYPES) + ".")
    for arch in c.get("architectures") or ():
        if arch not in ARCHITECTURES[model_type]:
            raise ValueError(f"config.json architectures={arch!r} is not supported for model_type"
                             f"={model_type!r}: expected one of "
                             + ", ".join(ARCHITECTURES[model_type]) + ".")
    tie = bool(_get(c, "tie_word_embeddings", True))
    if model_type == "gpt2":
        ref = REFERENCE["gpt2"]
        for key, default in (("scale_attn_weights", True), ("add_cross_attention", False),
                             ("scale_attn_by_inverse_layer_idx", False)):
            _get(c, key, default, (default,))
        d_model = _get(c, "n_embd", ref.d_model)
        return ref.replace(
            vocab_size=_get(c, "vocab_size", ref.vocab_size), d_model=d_model,
            num_heads=_get(c, "n_head", ref.num_heads), d_ff=c.get("n_inner") or 4 * d_model,
            num_layers=_get(c, "n_layer", ref.num_layers), max_len=_get(c, "n_positions", 1024),
            norm_eps=_get(c, "layer_norm_epsilon", 1e-5),
            tie_embeddings=tie or (bool(names) and "lm_head.weight" not in names),  # GPT2Model
            mlp_activation=_activation(c, "activation_function", "gelu_new"))
    if model_type == "bert":
        ref = REFERENCE["bert_base"]
        _get(c, "position_embedding_type", "absolute", ("absolute",))
        _get(c, "is_decoder", False, (False,))
        _get(c, "add_cross_attention", False, (False,))
        act = _activation(c, "hidden_act", "gelu")
        # BertModel has no MLM head: logits then come from the tied embeddings alone.
        head = "cls.predictions.transform.dense.weight" in names or not names
        return ref.replace(
            vocab_size=_get(c, "vocab_size", ref.vocab_size), d_model=_get(c, "hidden_size", 768),
            num_heads=_get(c, "num_attention_heads", 12), d_ff=_get(c, "intermediate_size", 3072),
            num_layers=_get(c, "num_hidden_layers", 12),
            max_len=_get(c, "max_position_embeddings", 512),
            num_token_types=_get(c, "type_vocab_size", 2),
            norm_eps=_get(c, "layer_norm_eps", 1e-12),
            mlp_activation=act, mlm_head_activation=act, tie_embeddings=tie or not head,
            mlm_head_transform=head, output_bias=head)
    ff = _get(c, "feed_forward_proj", "relu")
    parts = ff.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or (
            parts[-1] not in HF_ACTIVATIONS):
        raise ValueError(f"config.json feed_forward_proj={ff!r} has no jaxlm equivalent "
                         f"(supported: [gated-]{{{', '.join(HF_ACTIVATIONS)}}}).")
    _get(c, "is_encoder_decoder", True, (True,))
    num_layers = _get(c, "num_layers", 6)
    return REFERENCE["t5_base"].replace(
        vocab_size=_get(c, "vocab_size", 32128), d_model=_get(c, "d_model", 512),
        num_heads=_get(c, "num_heads", 8), head_dim=_get(c, "d_kv", 64),
        d_ff=_get(c, "d_ff", 2048),
        num_layers=num_layers, num_decoder_layers=c.get("num_decoder_layers") or num_layers,
        relative_buckets=_get(c, "relative_attention_num_buckets", 32),
        relative_max_distance=_get(c, "relative_attention_max_distance", 128),
        norm_eps=_get(c, "layer_norm_epsilon", 1e-6), max_len=c.get("n_positions") or 512,
        mlp_activation="gelu_tanh" if ff == "gated-gelu" else HF_ACTIVATIONS[parts[-1]],
        mlp_gated=len(parts) == 2, tie_embeddings=tie, scale_tied_logits=tie)


def _refuse(family: str, option: str, value: Any, need: Any) -> None:
    arch = EXPORT_ARCHITECTURE[family][0]
    raise ValueError(f"model.{option}={value!r} has no Hugging Face {arch} equivalent "
                     f"({arch} needs {need}).")


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The config.json for cfg, or ValueError naming the first option HF cannot represent."""
    fam = cfg.family
    t5 = fam == "encoder_decoder"
    fixed = dict(position="relative" if t5 else "learned", norm="rmsnorm" if t5 else "layernorm",
                 norm_position="post" if fam == "encoder" else "pre",
                 embedding_norm=fam == "encoder", final_norm=fam != "encoder", use_bias=not t5,
                 attention_logit_scale=not t5, output_bias=fam == "encoder",
                 mlm_head_transform=fam == "encoder", num_kv_heads=(None, cfg.num_heads),
                 scale_tied_logits=t5 and cfg.tie_embeddings)  # T5 scales exactly when tied
    if not t5:
        fixed.update(norm_bias=True, mlp_gated=False)
    if fam != "encoder":
        fixed.update(num_token_types=0)
    for option, need in fixed.items():
        value = getattr(cfg, option)
        if value not in (need if isinstance(need, tuple) else (need,)):
            _refuse(fam, option, value, need)
    if not t5 and cfg.head_size * cfg.num_heads != cfg.d_model:
        _refuse(fam, "head_dim", cfg.head_dim, f"d_model // num_heads = "
                f"{cfg.d_model // cfg.num_heads} and d_model divisible by num_heads")
    act = JAXLM_ACTIVATIONS[cfg.mlp_activation]
    model_type, arch = EXPORT_ARCHITECTURE[fam]
    out = dict(model_type=model_type, architectures=[arch], vocab_size=cfg.vocab_size,
               tie_word_embeddings=cfg.tie_embeddings)
    if fam == "decoder":
        return dict(out, n_embd=cfg.d_model, n_head=cfg.num_heads, n_inner=cfg.d_ff,
                    n_layer=cfg.num_layers, n_positions=cfg.max_len, activation_function=act,
                    layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout_rate,
                    embd_pdrop=cfg.dropout_rate, attn_pdrop=cfg.attention_dropout_rate)
    if fam == "encoder":
        if cfg.num_token_types < 1:
            _refuse(fam, "num_token_types", cfg.num_token_types, "at least 1")
        if cfg.mlm_head_activation != cfg.mlp_activation:
            _refuse(fam, "mlm_head_activation", cfg.mlm_head_activation, cfg.mlp_activation)
        return dict(out, hidden_size=cfg.d_model, num_attention_heads=cfg.num_heads,
                    intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers, hidden_act=act,
                    max_position_embeddings=cfg.max_len, type_vocab_size=cfg.num_token_types,
                    layer_norm_eps=cfg.norm_eps, position_embedding_type="absolute",
                    hidden_dropout_prob=cfg.dropout_rate, pad_token_id=0,
                    attention_probs_dropout_prob=cfg.attention_dropout_rate)
    ff = act
    if cfg.mlp_gated:  # HF reads 'gated-gelu' as the tanh approximation
        ff = "gated-" + {"gelu_tanh": "gelu", "gelu": "gelu_python"}.get(cfg.mlp_activation, act)
    return dict(out, d_model=cfg.d_model, d_kv=cfg.head_size, d_ff=cfg.d_ff,
                num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                num_decoder_layers=cfg.decoder_layers,
                relative_attention_num_buckets=cfg.relative_buckets,
                relative_attention_max_distance=cfg.relative_max_distance,
                layer_norm_epsilon=cfg.norm_eps, feed_forward_proj=ff, n_positions=cfg.max_len,
                dropout_rate=cfg.dropout_rate, is_encoder_decoder=True, pad_token_id=0,
                eos_token_id=1, decoder_start_token_id=0)


def _flax_to_pt_name(key: tuple[str, ...], x: np.ndarray) -> tuple[str, np.ndarray]:
    """HF Flax naming -> PyTorch naming (the inverse of transformers' pt-to-flax renaming)."""
    *mods, leaf = key
    if leaf == "kernel" and x.ndim == 2:  # Dense [in, out] (and GPT-2 FlaxConv1D [out, in])
        x = x.T
    return ".".join(mods + [{"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(
        leaf, leaf)]), x


def read_hf_weights(path: str) -> dict[str, np.ndarray]:
    """PyTorch-named numpy tensors from model.safetensors (or its shards) or flax_model.msgpack."""
    from safetensors.numpy import load

    single, index = io.join(path, "model.safetensors"), io.join(path,
                                                                "model.safetensors.index.json")
    if io.exists(single) or io.exists(index):
        files = [single]
        if not io.exists(single):
            shards = set(json.loads(io.read_text(index))["weight_map"].values())
            files = [io.join(path, s) for s in shards]
        # Old BERT checkpoints name LayerNorm params gamma / beta.
        return {re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)): v
                for file in files for k, v in load(io.read_bytes(file)).items()}
    msgpack = io.join(path, "flax_model.msgpack")
    if io.exists(msgpack):
        from flax.serialization import msgpack_restore

        tree = msgpack_restore(io.read_bytes(msgpack))
        return dict(_flax_to_pt_name(k, np.asarray(v)) for k, v in flatten_dict(tree).items())
    raise ValueError(f"{path!r} holds no weights: expected model.safetensors, "
                     "model.safetensors.index.json or flax_model.msgpack.")


def from_hf(path: str, *, scan_layers: bool = True, dtype: str = "float32",
            **overrides: Any) -> tuple[nn.Module, dict]:
    """(model, unboxed params) from a saved HF GPT-2, BERT or T5 checkpoint folder."""
    config_path = io.join(path, "config.json")
    if not io.exists(config_path):
        raise ValueError(f"{path!r} has no config.json: not a Hugging Face checkpoint folder.")
    c = json.loads(io.read_text(config_path))
    config_from_hf(c)  # model_type and architecture errors before reading any weights
    hf = read_hf_weights(path)
    model_type = c["model_type"]
    cfg = config_from_hf(c, set(hf)).replace(scan_layers=scan_layers, dtype=dtype,
                                             dropout_rate=0.0, attention_dropout_rate=0.0)
    cfg = cfg.replace(**overrides)
    prefix = {"gpt2": "transformer.", "bert": "bert.", "t5": ""}[model_type]
    if not any(k.startswith(prefix) for k in hf):  # GPT2Model / BertModel: no prefix
        prefix = ""
    aliases = _aliases(model_type, cfg, prefix)
    shapes = _jaxlm_shapes(cfg)
    flat, used = {}, set()
    for name, paths, n_in, transpose in TABLES[model_type](cfg, prefix):
        src = name if name in hf else next(
            (a for a, canon in aliases.items() if canon == name and a in hf), None)
        if src is None:
            raise ValueError(f"HF tensor {name!r} is missing from {path!r}.")
        used.add(src)
        if any(p not in shapes for p in paths):
            raise ValueError(f"The jaxlm config has no param {paths[0]!r} for HF tensor {src!r} "
                             f"(do the overrides {overrides} change the architecture?).")
        want = [shapes[p] for p in paths]
        x = np.asarray(hf[src], np.float32)
        if x.shape != _hf_shape(want, n_in, transpose):
            raise ValueError(f"HF tensor {src!r} has shape {x.shape}; the config implies "
                             f"{_hf_shape(want, n_in, transpose)} (for jaxlm {', '.join(paths)}).")
        flat.update(zip(paths, _from_hf(x, want, n_in, transpose)))
    unused = sorted(k for k in hf if k not in used and k not in aliases and not IGNORED.search(k))
    if unused:
        raise ValueError(f"{len(unused)} HF tensors have no place in the jaxlm model: "
                         + ", ".join(unused[:8]))
    missing = sorted(set(shapes) - set(flat))
    if missing:
        raise ValueError(f"No HF tensor maps to jaxlm params {', '.join(missing[:8])}.")
    params = unflatten_dict({k: jnp.asarray(v, cfg.weight_dtype) for k, v in flat.items()}, sep="/")
    return build_model(cfg), stack_layers(params) if cfg.scan_layers else params


def to_hf(model_or_cfg: nn.Module | ModelConfig, params: Any, path: str) -> None:
    """Writes config.json and model.safetensors (PyTorch names) that transformers' Auto classes
    load as the same network. Params may be scanned or unrolled, boxed or unboxed."""
    from safetensors.numpy import save

    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    hf_config = config_to_hf(cfg)
    flat = flatten_dict(unstack_layers(nn.meta.unbox(params)), sep="/")
    shapes = _jaxlm_shapes(cfg)
    for name in sorted(set(shapes) | set(flat)):
        got = tuple(np.shape(flat[name])) if name in flat else None
        if got != shapes.get(name):
            raise ValueError(f"jaxlm param {name!r} has shape {got}; the config implies "
                             f"{shapes.get(name)} (None: absent).")
    tensors = {}
    for name, paths, n_in, transpose in TABLES[hf_config["model_type"]](cfg):
        arrays = [np.asarray(jax.device_get(flat[p]), np.float32) for p in paths]
        tensors[name] = np.ascontiguousarray(_to_hf(arrays, n_in, transpose))
    io.write_text(io.join(path, "config.json"), json.dumps(hf_config, indent=2, sort_keys=True))
    io.write_bytes(io.join(path, "model.safetensors"), save(tensors, metadata={"format": "pt"}))
