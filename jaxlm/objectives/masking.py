"""Masked LM: BERT on an encoder, and T5's "BERT-style" objective on an encoder-decoder."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from jaxlm.conventions import EOS_ID, PAD_ID, UNK_ID
from jaxlm.objectives.common import (
    STREAM_MLM,
    Features,
    as_tokens,
    check_open_unit,
    check_unit,
    decoder_features,
    i32,
    rng,
)


def draw_non_special(
    gen: np.random.Generator, n: int, vocab_size: int, specials: np.ndarray
) -> np.ndarray:
    """n ids uniform over [0, vocab_size) minus `specials` (sorted, unique, in range)."""
    r = gen.integers(0, vocab_size - specials.size, size=n)
    # Map the k-th non-special rank to its id: the id is r plus the number of specials at or
    # below it. With shifted[i] = specials[i] - i, that count is the number of shifted values
    # <= r (specials sorted and unique), one vectorised search instead of a loop over specials.
    shifted = specials - np.arange(specials.size)
    return (r + np.searchsorted(shifted, r, side="right")).astype(np.int32)


def select_whole_words(
    gen: np.random.Generator, eligible: np.ndarray, starts: np.ndarray, budget: int
) -> np.ndarray:
    """Positions of whole words, taken in random order while they fit in `budget` (BERT's rule)."""
    prev_eligible = np.concatenate([[False], eligible[:-1]])
    # A word also ends at any special token, so specials never sit inside a selected word.
    boundary = starts | ~prev_eligible
    word_id = np.cumsum(boundary)
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return idx
    words = np.split(idx, np.flatnonzero(np.diff(word_id[idx])) + 1)
    order = gen.permutation(len(words))
    chosen: list[np.ndarray] = []
    count = 0
    for w in order:
        size = words[w].size
        # Like BERT's create_pretraining_data: skip a word that would overshoot, try smaller ones.
        if count + size > budget:
            continue
        chosen.append(words[w])
        count += size
        if count == budget:
            break
    if not chosen:  # every word is longer than the budget: still predict one word
        chosen.append(words[order[0]])
    return np.sort(np.concatenate(chosen))


def mlm(
    tokens: np.ndarray,
    *,
    seed: int,
    vocab_size: int,
    mask_id: int,
    mask_rate: float = 0.15,
    mask_token_fraction: float = 0.8,
    random_token_fraction: float = 0.1,
    whole_word_starts: np.ndarray | None = None,
    special_ids: Collection[int] = (PAD_ID, EOS_ID, UNK_ID),
) -> Features:
    """BERT masked LM on an encoder stream.

    Selects exactly round(mask_rate * #eligible) positions (at least one if any is eligible;
    eligible = not pad, not in `special_ids`, not `mask_id`). Each selected token independently
    becomes `mask_id` with probability mask_token_fraction, a random non-special id with
    probability random_token_fraction, and stays unchanged otherwise: BERT's 80/10/10 by default;
    T5's "BERT-style" objective is mask_token_fraction=0.9, random_token_fraction=0.0 (90/10).

    whole_word_starts: optional bool array, True where a token begins a word. Whole words are then
    taken in random order while they fit in the budget (BERT's rule, so the count may fall short
    of the budget; if no word fits, one word is taken anyway).

    Returns encoder_input_tokens (corrupted), encoder_target_tokens (the original tokens) and
    encoder_loss_weights (1 on the selected positions).
    """
    check_open_unit("mask_rate", mask_rate)
    check_unit("mask_token_fraction", mask_token_fraction)
    check_unit("random_token_fraction", random_token_fraction)
    if mask_token_fraction + random_token_fraction > 1.0 + 1e-9:
        raise ValueError(
            "mask_token_fraction + random_token_fraction must be <= 1, got "
            f"{mask_token_fraction} + {random_token_fraction}"
        )
    if not 0 <= int(mask_id) < int(vocab_size):
        raise ValueError(f"mask_id={mask_id} must be in [0, vocab_size={vocab_size})")
    # The mask id and pad are special whatever the caller passed: masking them is meaningless.
    specials = np.unique(
        np.asarray([int(s) for s in special_ids] + [PAD_ID, int(mask_id)], dtype=np.int64)
    )
    specials = specials[(specials >= 0) & (specials < vocab_size)]
    if int(vocab_size) <= specials.size:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no non-special id for random replacement "
            f"({specials.size} special ids)"
        )
    tokens = as_tokens(tokens)
    starts = None
    if whole_word_starts is not None:
        starts = np.asarray(whole_word_starts, dtype=bool)
        if starts.shape != tokens.shape:
            raise ValueError(
                f"whole_word_starts must have the shape of tokens {tokens.shape}, "
                f"got {starts.shape}"
            )

    gen = rng(seed, STREAM_MLM)
    eligible = ~np.isin(tokens, specials)
    n_eligible = int(eligible.sum())
    budget = max(1, int(round(mask_rate * n_eligible))) if n_eligible else 0
    if budget == 0:
        selected = np.zeros(0, dtype=np.int64)
    elif starts is None:
        selected = np.sort(gen.choice(np.flatnonzero(eligible), size=budget, replace=False))
    else:
        selected = select_whole_words(gen, eligible, starts, budget)

    inputs = tokens.copy()
    u = gen.random(selected.size)
    to_mask = selected[u < mask_token_fraction]
    to_random = selected[
        (u >= mask_token_fraction) & (u < mask_token_fraction + random_token_fraction)
    ]
    inputs[to_mask] = mask_id
    inputs[to_random] = draw_non_special(gen, to_random.size, int(vocab_size), specials)
    weights = np.zeros(tokens.shape, dtype=np.int32)
    weights[selected] = 1
    return {
        "encoder_input_tokens": inputs,
        "encoder_target_tokens": tokens.copy(),
        "encoder_loss_weights": weights,
    }


def mlm_encoder_decoder(
    tokens: np.ndarray, *, seed: int, vocab_size: int, mask_id: int, eos_id: int = EOS_ID,
    **mlm_options: Any,
) -> Features:
    """T5's "BERT-style" objective (Table 4) on an encoder-decoder: the encoder reads the text
    corrupted by `mlm` (same selection and replacement options), the decoder reproduces the whole
    original text + EOS."""
    tokens = as_tokens(tokens)
    corrupted = mlm(tokens, seed=seed, vocab_size=vocab_size, mask_id=mask_id, **mlm_options)
    eos = i32([eos_id])
    return {
        "encoder_input_tokens": np.concatenate([corrupted["encoder_input_tokens"], eos]),
        **decoder_features(np.concatenate([tokens, eos])),
    }


def mlm_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    """vocab_size, mask_id and every id that is not ordinary text as special: never selected,
    never a random replacement (sentinels, mode ids, the byte vocabulary's unused ids, ...)."""
    regular = vocab.regular_ids
    specials = [i for i in range(vocab.vocab_size) if i not in regular]
    return dict(vocab_size=vocab.vocab_size, mask_id=vocab.mask_id, special_ids=specials)
