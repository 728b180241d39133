"""FLOP accounting against XLA's own count of the compiled forward pass."""

import jax
import pytest

from jaxlm.flops import forward_flops, training_flops
from jaxlm.models import get_preset

from .models._util import make, random_batch, tiny


@pytest.mark.parametrize("family,changes", [
    ("decoder", {}), ("encoder", dict(mlm_head_transform=True)),
    ("encoder_decoder", dict(mlp_activation="swiglu", num_kv_heads=2)),
])
def test_forward_flops_match_xla_cost_analysis(family, changes):
    cfg = tiny(family, d_model=128, d_ff=512, vocab_size=512, **changes)
    batch = random_batch(cfg, 1, 64, decoder_length=32)
    model, params = make(cfg, batch)
    compiled = jax.jit(lambda p, b: model.apply({"params": p}, b)).lower(params, batch).compile()
    analysis = compiled.cost_analysis()
    xla = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    # random_batch sizes a decoder-only stream by decoder_length.
    ours = {"decoder": forward_flops(cfg, 32), "encoder": forward_flops(cfg, 64),
            "encoder_decoder": forward_flops(cfg, 64, 32)}[family]
    # XLA also counts element-wise work (softmax, norms, activations): a few percent more.
    assert 0.85 * xla <= ours <= 1.02 * xla, (ours, xla)


def test_gpt2_training_flops_are_about_6n_per_token_plus_attention():
    cfg = get_preset("gpt2")
    per_token = training_flops(cfg, 1024) / 1024
    non_embedding = 85_054_464 + 1536  # blocks + final norm (the 6N convention excludes embeddings)
    six_n = 6 * (non_embedding + cfg.d_model * cfg.vocab_size)
    attention = 12 * cfg.num_layers * 1024 * cfg.d_model
    assert per_token == pytest.approx(six_n + attention, rel=0.01)
