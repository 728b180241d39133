"""transformers' Flax GPT-2 / BERT / T5 as benchmark contenders (`--compare-hf`, `--from-hf`).

transformers is an optional dependency: it is imported inside these functions only, and
`require_transformers` turns its absence into one `MissingDependency` line for the command line.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from typing import Any

import jax

from jaxlm.bench.step import Contender, compile_contender, jaxlm_plain_contender, plain_step
from jaxlm.bench.step import targets_key
from jaxlm.models import ModelConfig
from jaxlm.optim import OptimConfig, make_optimizer

HF_CLASSES = {"decoder": "FlaxGPT2LMHeadModel", "encoder": "FlaxBertForMaskedLM",
              "encoder_decoder": "FlaxT5ForConditionalGeneration"}
# The Flax models were removed in transformers 5.
HF_REQUIREMENT = "transformers>=4.45,<5"


class MissingDependency(RuntimeError):
    """An optional package a requested contender needs is not installed."""


def require_transformers(flag: str, torch: bool = False) -> None:
    """Raises MissingDependency, naming `flag` and what to install, without transformers' Flax
    models (or, with `torch`, without PyTorch, which writes the GPT-2 that --from-hf reads)."""
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is None or not hasattr(transformers, "FlaxGPT2LMHeadModel"):
        raise MissingDependency(
            f"{flag} needs transformers' Flax models, which are not installed: "
            f"pip install '{HF_REQUIREMENT}'")
    if torch and importlib.util.find_spec("torch") is None:
        raise MissingDependency(f"{flag} needs PyTorch to write the GPT-2 checkpoint it reads: "
                                "pip install torch")


def hf_config(cfg: ModelConfig) -> tuple[str, dict[str, Any]]:
    """(model_type, config kwargs) of the HF model of cfg's shape (jaxlm.hf.config_to_hf)."""
    from jaxlm.hf import config_to_hf

    kwargs = dict(config_to_hf(cfg))
    kwargs.pop("architectures")
    return kwargs.pop("model_type"), kwargs


def hf_model(cfg: ModelConfig, abstract: bool = False) -> Any:
    """transformers' Flax model at cfg's shape (abstract: parameters not initialised)."""
    import transformers

    model_type, kwargs = hf_config(cfg)
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    cls = getattr(transformers, HF_CLASSES[cfg.family])
    return cls(config, seed=0, dtype=cfg.compute_dtype, _do_init=not abstract)


def hf_apply(cfg: ModelConfig, model: Any) -> Callable:
    """(params, batch) -> logits of the HF model, reading jaxlm's feature names."""
    if cfg.family == "decoder":
        return lambda p, b: model(b["decoder_input_tokens"], params=p).logits
    if cfg.family == "encoder":
        return lambda p, b: model(b["encoder_input_tokens"], params=p).logits
    return lambda p, b: model(b["encoder_input_tokens"],
                              decoder_input_ids=b["decoder_input_tokens"], params=p).logits


def hf_contender(cfg: ModelConfig, optim: OptimConfig, batch: dict, abstract: bool = False
                 ) -> Contender:
    """transformers' Flax model with the plain optax step (abstract: compile-time only)."""
    model = hf_model(cfg, abstract)
    optimizer = make_optimizer(optim)
    if abstract:
        shape = batch["encoder_input_tokens" if cfg.family != "decoder"
                      else "decoder_input_tokens"].shape
        params = jax.eval_shape(lambda: model.init_weights(jax.random.key(0), shape))
    else:
        params = model.params
    fn = plain_step(hf_apply(cfg, model), targets_key(cfg), optimizer)
    state = (params, jax.eval_shape(optimizer.init, params) if abstract else optimizer.init(params))
    return compile_contender("hf", fn, state, jax.device_put(batch) if not abstract else batch)


def random_hf_gpt2(cfg: ModelConfig, path: str) -> None:
    """Writes a randomly initialised HF GPT-2 checkpoint of cfg's shape (no download)."""
    import transformers

    _, kwargs = hf_config(cfg)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs))
    model.save_pretrained(path, safe_serialization=True)


def from_hf_contender(cfg: ModelConfig, optim: OptimConfig, batch: dict) -> Contender:
    """Held-out check: a GPT-2 imported by jaxlm.hf.from_hf, trained with a plain optax step."""
    from jaxlm.hf import from_hf

    with tempfile.TemporaryDirectory() as tmp:
        random_hf_gpt2(cfg, tmp)
        model, params = from_hf(tmp, scan_layers=cfg.scan_layers, dtype=cfg.dtype,
                                remat_policy=cfg.remat_policy, attention_impl=cfg.attention_impl)
    return jaxlm_plain_contender(model.cfg, optim, batch, params, model, name="jaxlm-from-hf")
