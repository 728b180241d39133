"""Deshuffling (the T5 paper's baseline objective, Table 4): unshuffle the text's tokens."""

from __future__ import annotations

import numpy as np

from jaxlm.conventions import EOS_ID
from jaxlm.objectives.common import (
    STREAM_DESHUFFLE,
    Features,
    as_tokens,
    decoder_features,
    i32,
    rng,
)


def deshuffle(tokens: np.ndarray, *, seed: int, eos_id: int = EOS_ID) -> Features:
    """Encoder-decoder: the encoder reads the tokens in a uniformly random order + EOS, the
    decoder reproduces the original order + EOS (T5's `preprocessors.deshuffle` semantics)."""
    tokens = as_tokens(tokens)
    shuffled = tokens[rng(seed, STREAM_DESHUFFLE).permutation(tokens.size)]
    eos = i32([eos_id])
    return {
        "encoder_input_tokens": np.concatenate([shuffled, eos]),
        **decoder_features(np.concatenate([tokens, eos])),
    }
