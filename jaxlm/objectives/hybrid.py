"""GPT-BERT's hybrid (Charpentier & Samuel, BabyLM 2024): causal and masked next-token prediction
on one decoder-shaped model, one parameter set.

Each example is, by its seed, causal with probability `causal_fraction` (plain next-token
prediction: `clm` with decoder_causal_attention 0 everywhere) or masked: BERT's masking
(`masking.mlm`: mask_rate of the ordinary tokens selected, 80/10/10 by default) is applied to the
text, attention is bidirectional over the whole example (decoder_causal_attention 1 everywhere: the
prefix-LM mechanism with the prefix spanning the example), and a masked token is predicted at the
position BEFORE it, as CLM targets are: decoder_input_tokens is the corrupted text shifted right,
decoder_target_tokens the original text, decoder_loss_weights 1 on the selected tokens. The model
learns both modes; which one it runs at inference is the attention mask it is given.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from jaxlm.conventions import EOS_ID, PAD_ID, UNK_ID
from jaxlm.objectives.common import (
    STREAM_HYBRID_MODE,
    Features,
    as_tokens,
    check_unit,
    decoder_features,
    rng,
    shift_right,
)
from jaxlm.objectives.masking import mlm


def hybrid_is_causal(seed: int, causal_fraction: float = 1 / 16) -> bool:
    """Whether `hybrid` makes the example of `seed` causal."""
    check_unit("causal_fraction", causal_fraction)
    return bool(rng(seed, STREAM_HYBRID_MODE).random() < causal_fraction)


def hybrid(
    tokens: np.ndarray,
    *,
    seed: int,
    vocab_size: int,
    mask_id: int,
    causal_fraction: float = 1 / 16,
    mask_rate: float = 0.15,
    mask_token_fraction: float = 0.8,
    random_token_fraction: float = 0.1,
    special_ids: Collection[int] = (PAD_ID, EOS_ID, UNK_ID),
) -> Features:
    """Decoder-only masked-or-causal next-token prediction (see the module docstring)."""
    check_unit("causal_fraction", causal_fraction)
    tokens = as_tokens(tokens)
    # Always run the masking, so a bad masking option fails whatever mode this seed draws.
    masked = mlm(tokens, seed=seed, vocab_size=vocab_size, mask_id=mask_id, mask_rate=mask_rate,
                 mask_token_fraction=mask_token_fraction,
                 random_token_fraction=random_token_fraction, special_ids=special_ids)
    features = decoder_features(tokens)
    if hybrid_is_causal(seed, causal_fraction):
        features["decoder_causal_attention"] = np.zeros(tokens.shape, np.int32)
        return features
    features["decoder_input_tokens"] = shift_right(masked["encoder_input_tokens"])
    features["decoder_loss_weights"] = masked["encoder_loss_weights"]
    features["decoder_causal_attention"] = np.ones(tokens.shape, np.int32)
    return features
