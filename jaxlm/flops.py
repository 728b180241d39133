"""Model FLOPs per example, for MFU: matmul FLOPs of every projection plus attention, per family.

Counts follow the PaLM appendix convention: a matmul of [m, k] x [k, n] is 2mkn FLOPs, training is
3x the forward pass (forward + two backward matmuls), attention counts the full square even when
causal, and element-wise work (norms, softmax, activations) is ignored. The embedding lookup is no
matmul; the output projection to the vocabulary is.
"""

from __future__ import annotations

from jaxlm.models.config import ModelConfig


def _block_matmul_params(cfg: ModelConfig, cross: bool) -> tuple[int, int]:
    """(params applied to the block's own tokens, params applied to the cross-attended tokens)."""
    d, h, g, hd = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size
    attention = d * h * hd * 2 + d * g * hd * 2  # query, out; key, value
    mlp = d * cfg.d_ff * (3 if cfg.mlp_gated else 2)
    own = attention + mlp
    if not cross:
        return own, 0
    return own + d * h * hd * 2, d * g * hd * 2  # cross query/out on own tokens; key/value on memory


def _attention_flops(cfg: ModelConfig, queries: int, keys: int) -> int:
    """QK^T and attention-weighted values for one layer, forward."""
    return 2 * 2 * queries * keys * cfg.num_heads * cfg.head_size


def forward_flops(cfg: ModelConfig, length: int, decoder_length: int | None = None) -> int:
    """Forward FLOPs for one example of `length` tokens (encoder-decoder: `length` encoder tokens
    and `decoder_length` decoder tokens)."""
    d, vocab = cfg.d_model, cfg.vocab_size
    head = 2 * d * vocab + (2 * d * d if cfg.mlm_head_transform else 0)
    if cfg.family in ("decoder", "encoder"):
        own, _ = _block_matmul_params(cfg, cross=False)
        layer = 2 * own * length + _attention_flops(cfg, length, length)
        return cfg.num_layers * layer + head * length
    dec_len = length if decoder_length is None else decoder_length
    enc_own, _ = _block_matmul_params(cfg, cross=False)
    encoder = cfg.num_layers * (2 * enc_own * length + _attention_flops(cfg, length, length))
    dec_own, dec_memory = _block_matmul_params(cfg, cross=True)
    decoder = cfg.decoder_layers * (2 * dec_own * dec_len + 2 * dec_memory * length
                                    + _attention_flops(cfg, dec_len, dec_len)
                                    + _attention_flops(cfg, dec_len, length))
    return encoder + decoder + head * dec_len


def training_flops(cfg: ModelConfig, length: int, decoder_length: int | None = None) -> int:
    """Forward + backward FLOPs for one example: three times the forward pass."""
    return 3 * forward_flops(cfg, length, decoder_length)
