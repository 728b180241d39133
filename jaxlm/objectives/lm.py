"""Language modelling: causal LM (GPT) and prefix LM (T5X, decoder-only and encoder-decoder)."""

from __future__ import annotations

import numpy as np

from jaxlm.conventions import EOS_ID
from jaxlm.objectives.common import STREAM_PREFIX, Features, as_tokens, decoder_features, i32, rng


def clm(tokens: np.ndarray) -> Features:
    """Causal LM (GPT): predict every token from the ones before it."""
    return decoder_features(as_tokens(tokens))


def clm_batch(tokens: np.ndarray, seeds: np.ndarray) -> Features:
    """`clm` of equally long rows tokens [B, n] (seeds unused): features [B, n]."""
    del seeds
    return decoder_features(np.asarray(tokens))


def prefix_split(length: int, seed: int) -> int:
    """The prefix length of a sequence: uniform on [1, length-1] (0 below 2 tokens)."""
    # T5's random_prefix_noise_mask at density 0.5; sequences shorter than 2 get an empty prefix
    # (all targets), as in T5.
    if length < 2:
        return 0
    return int(rng(seed, STREAM_PREFIX).integers(1, length))


def prefix_lm(tokens: np.ndarray, *, seed: int, eos_id: int = EOS_ID) -> Features:
    """Decoder-only prefix LM (T5X PrefixLMFeatureConverter semantics).

    A split s is drawn uniformly from [1, len-1]; tokens[:s] is the prefix, tokens[s:] the
    targets. The output keeps the input length (no EOS is inserted; `eos_id` is accepted only so
    all prefix/span objectives share a signature). decoder_loss_weights is 1 on positions >= s.
    decoder_causal_attention is 1 on positions 0..s inclusive of the shifted input stream, i.e.
    T5X's `positions < inputs_width + 1`: the start token plus the s prefix tokens attend
    bidirectionally, the first target is predicted from that full prefix.
    """
    del eos_id
    tokens = as_tokens(tokens)
    split = prefix_split(tokens.size, seed)
    features = decoder_features(tokens)
    positions = np.arange(tokens.size)
    features["decoder_loss_weights"] *= (positions >= split).astype(np.int32)
    features["decoder_causal_attention"] = (positions < split + 1).astype(np.int32)
    return features


def prefix_lm_encoder_decoder(tokens: np.ndarray, *, seed: int, eos_id: int = EOS_ID) -> Features:
    """Encoder-decoder prefix LM: encoder gets prefix + EOS, decoder predicts the rest + EOS."""
    tokens = as_tokens(tokens)
    split = prefix_split(tokens.size, seed)
    eos = i32([eos_id])
    return {
        "encoder_input_tokens": np.concatenate([tokens[:split], eos]),
        **decoder_features(np.concatenate([tokens[split:], eos])),
    }
