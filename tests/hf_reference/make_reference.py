"""Writes the golden PyTorch references of tests/test_hf.py: tiny random-init transformers models.

Needs torch and transformers (the `hf` extra), not jax. From the repository root:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install "torch>=2.4,!=2.14.*,<2.15" "transformers>=4.45,<5" \
        safetensors numpy
    /tmp/torchenv/bin/python tests/hf_reference/make_reference.py

(on a CPU machine, install torch from https://download.pytorch.org/whl/cpu first: it skips the
CUDA wheels). For each model it writes tests/hf_reference/<name>/: config.json and
model.safetensors (save_pretrained, PyTorch names) and reference.npz: the jaxlm batch (feature
names as in jaxlm), `keep` (the output positions that are defined) and transformers' PyTorch
`logits` for it.

    python tests/hf_reference/make_reference.py --check     # with jaxlm installed: .[dev,hf]

checks the stored data against live PyTorch instead of writing it: the golden folders still give
their stored logits in the installed transformers, and so do jaxlm's exports of them
(`jaxlm.hf.to_hf` after `from_hf`), tensor for tensor. tests/test_hf.py runs on the stored data
alone, so the default test install needs no torch; run the check after upgrading transformers.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 128
NAMES = ("gpt2", "bert", "t5_v1_0", "t5_v1_1")
TOL = 1e-4  # max |logit difference| on the positions that are defined


def models() -> dict:
    """name -> a function making the model (torch and transformers are imported here only, so
    that tests/test_hf.py can import hf_kwargs without them)."""
    import transformers

    # Init std 0.2 (not 0.02) so that attention is far from uniform and a swapped or untransposed
    # query / key would show in the logits.
    return {
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


def randomize(model: torch.nn.Module) -> None:
    """Random norms and biases too (HF inits them to 1 / 0, which would hide a mix-up)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in ("LayerNorm", "ln_", "layer_norm")) or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


def inputs(name: str, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(jaxlm batch, mask of the output positions to compare); id 0 is padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (2, 10))
    if name == "gpt2":
        return {"decoder_input_tokens": ids}, np.ones(ids.shape, bool)
    ids[1, 6:] = 0  # padding on the second row
    if name == "bert":  # padded rows are unspecified
        types = rng.integers(0, 2, ids.shape)
        return {"encoder_input_tokens": ids, "encoder_token_types": types}, ids != 0
    dec = rng.integers(3, VOCAB, (2, 7))
    dec[:, 0] = 0  # T5 starts the decoder with pad
    return {"encoder_input_tokens": ids, "decoder_input_tokens": dec}, np.ones(dec.shape, bool)


def hf_kwargs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' call arguments for a jaxlm batch (id 0 is padding)."""
    if "encoder_input_tokens" not in batch:
        return {"input_ids": batch["decoder_input_tokens"]}
    ids = batch["encoder_input_tokens"]
    kwargs = {"input_ids": ids, "attention_mask": ids != 0}
    if "encoder_token_types" in batch:
        kwargs["token_type_ids"] = batch["encoder_token_types"]
    if "decoder_input_tokens" in batch:
        kwargs["decoder_input_ids"] = batch["decoder_input_tokens"]
    return kwargs


def load_reference(name: str) -> tuple[str, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(golden folder, jaxlm batch, mask of output positions to compare, PyTorch logits)."""
    path = os.path.join(HERE, name)
    with np.load(os.path.join(path, "reference.npz")) as f:
        data = dict(f)
    keep, logits = data.pop("keep"), data.pop("logits")
    return path, data, keep, logits


def architecture(path: str) -> str:
    """The transformers class a save_pretrained folder names."""
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)["architectures"][0]


def max_err(out: np.ndarray, ref: np.ndarray, keep: np.ndarray) -> float:
    """The largest |out - ref| over the kept positions (shapes must agree)."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    return float(np.abs(out - ref)[keep].max())


def check() -> None:
    """Stored logits == live PyTorch, for the golden folders and for jaxlm's exports of them."""
    import torch
    import transformers

    from jaxlm.hf import from_hf, to_hf

    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            path, batch, keep, ref = load_reference(name)
            model, params = from_hf(path)
            exported_path = os.path.join(tmp, name)
            to_hf(model, params, exported_path)
            golden, exported = (getattr(transformers, architecture(p)).from_pretrained(p).eval()
                                for p in (path, exported_path))
            kwargs = {k: torch.tensor(v) for k, v in hf_kwargs(batch).items()}
            for what, hf_model in (("golden", golden), ("export", exported)):
                with torch.no_grad():
                    err = max_err(hf_model(**kwargs).logits.numpy(), ref, keep)
                if err >= TOL:
                    raise SystemExit(f"{name} {what}: max logit error {err:.2e} >= {TOL}")
            for key, value in golden.state_dict().items():
                torch.testing.assert_close(exported.state_dict()[key], value, rtol=0, atol=0,
                                           msg=key)
            print(f"{name}: golden and export match live PyTorch "
                  f"(transformers {transformers.__version__}, torch {torch.__version__})")


def main() -> None:
    import torch

    for i, (name, make) in enumerate(models().items()):
        torch.manual_seed(i)
        model = make()
        randomize(model)
        model.eval()
        out = os.path.join(HERE, name)
        model.save_pretrained(out, safe_serialization=True)
        batch, keep = inputs(name)
        with torch.no_grad():
            kwargs = {k: torch.tensor(v) for k, v in hf_kwargs(batch).items()}
            logits = model(**kwargs).logits.numpy()
        np.savez_compressed(os.path.join(out, "reference.npz"), keep=keep, logits=logits, **batch)
        print(name, {k: v.shape for k, v in batch.items()}, "->", logits.shape)


if __name__ == "__main__":
    check() if sys.argv[1:] == ["--check"] else main()
