"""T5 span corruption and its noise-span arithmetic (lengths, noise masks, sentinels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlm.conventions import EOS_ID
from jaxlm.objectives.common import (
    STREAM_SPANS,
    Features,
    as_tokens,
    check_open_unit,
    check_positive,
    check_sentinel_vocab,
    decoder_features,
    mix_seeds,
    num_specials,
    seed_array,
)


def span_corruption_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(raw tokens length, targets length) so that corrupted inputs + EOS fit `inputs_length`.

    T5's random_spans_helper (one sentinel per span, EOS on both sides): the largest raw length
    whose corrupted inputs, EOS included, are <= inputs_length. 512 -> (568, 114).
    """
    check_open_unit("noise_density", noise_density)
    check_positive("mean_noise_span_length", mean_noise_span_length)
    if int(inputs_length) < 2:
        raise ValueError(f"inputs_length must be >= 2, got {inputs_length!r}")

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return (tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1)

    tokens_length = int(inputs_length) - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    # T5's own tweak: at density 0.5 shave one token so targets do not exceed the (round) inputs.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def span_corruption_max_lengths(raw: int, density: float, mean: float) -> tuple[int, int]:
    """Largest (inputs, targets) of span corruption over every piece length 1..raw (EOS included),
    with the arithmetic of `random_spans_noise_mask`."""
    enc, dec = 2, 2  # a 1-token piece: [token, EOS] / [sentinel, EOS]
    for n in range(2, raw + 1):
        noise, spans = noise_span_counts(n, density, mean)
        enc, dec = max(enc, n - noise + spans + 1), max(dec, noise + spans + 1)
    return enc, dec


def random_cuts(keys: np.ndarray, count: int) -> np.ndarray:
    """[B, count] sorted: per row, the (1-based) gaps of the `count` smallest keys [B, gaps].

    With independent uniform keys every set of cuts is equally likely, so the parts between them
    are a uniformly random composition (what T5's shuffle of boundary flags draws).
    """
    return np.sort(np.argsort(keys, axis=1, kind="stable")[:, :count], axis=1) + 1


def noise_span_counts(
    length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(noise tokens, noise spans) of a sequence of `length` (>= 2) tokens, as T5 counts them."""
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    # Departure from T5 only where T5 breaks: a span count above either token count would need
    # empty spans, so cap it (never reached with mean span >= 1 and density <= 0.5).
    return num_noise, min(num_spans, num_noise, length - num_noise)


def random_spans_noise_masks(
    length: int,
    seeds: np.ndarray,
    *,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> np.ndarray:
    """T5's random_spans_noise_mask for a batch of seeds: bool [B, length], True on noise.

    num_noise = round(length * noise_density) clipped to [1, length-1]; num_spans =
    max(1, round(num_noise / mean_noise_span_length)); noise and non-noise lengths are independent
    uniform compositions into num_spans parts, interleaved non-noise first, so the sequence always
    ends with a noise span (corrupted inputs end with a sentinel, targets start with one).
    Row i is `random_spans_noise_mask(length, seed=seeds[i])`: its randomness is counter-based
    keys `mix_seeds(seed, STREAM_SPANS << 40 | gap)` (noise gaps first, then non-noise ones), so
    a row depends on its seed only, whatever batch it is drawn in.
    """
    check_open_unit("noise_density", noise_density)
    check_positive("mean_noise_span_length", mean_noise_span_length)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 1)
    orig_length = int(length)
    length = max(orig_length, 2)  # as T5: avoid degenerate cases, truncate at the end
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    # The stream in the counter's high bits: two hash rounds instead of three (this runs once
    # per example where UL2 and greedy packing call it row by row).
    keys = mix_seeds(seeds, np.arange(length - 2) + (STREAM_SPANS << 40))
    noise_cuts = random_cuts(keys[:, : num_noise - 1], num_spans - 1)
    nonnoise_cuts = random_cuts(keys[:, num_noise - 1 :], num_spans - 1)
    # Noise span j (0-based) starts after j + 1 non-noise parts and j noise parts and ends
    # after j + 1 of each: +1 / -1 there, and the running sum is the mask.
    b = seeds.shape[0]
    nonnoise_ends = np.empty((b, num_spans), np.int64)
    nonnoise_ends[:, :-1], nonnoise_ends[:, -1] = nonnoise_cuts, length - num_noise
    noise_edges = np.zeros((b, num_spans + 1), np.int64)
    noise_edges[:, 1:-1], noise_edges[:, -1] = noise_cuts, num_noise
    toggles = np.zeros((b, length + 1), np.int8)
    rows = np.arange(b)[:, None]
    toggles[rows, nonnoise_ends + noise_edges[:, :-1]] = 1
    toggles[rows, nonnoise_ends + noise_edges[:, 1:]] = -1
    return np.cumsum(toggles[:, :orig_length], axis=1, dtype=np.int8).astype(bool)


def random_spans_noise_mask(
    length: int, *, seed: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> np.ndarray:
    """T5's random_spans_noise_mask for one seed: bool [length] (see random_spans_noise_masks)."""
    return random_spans_noise_masks(
        length,
        seed_array(seed),
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )[0]


def spans_to_sentinels(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> np.ndarray:
    """Replace each run of masked tokens by one sentinel, counting down from vocab_size - 1.

    tokens / mask [..., n]; every row must have as many runs and masked tokens (true of the rows
    of one noise-mask batch), so the rows stay equally long.
    """
    mask = np.asarray(mask, dtype=bool)
    prev = np.zeros_like(mask)
    prev[..., 1:] = mask[..., :-1]
    first = mask & ~prev
    out = np.where(first, vocab_size - np.cumsum(first, axis=-1), tokens)[~(mask & prev)]
    return out.reshape(*mask.shape[:-1], -1).astype(np.int32)


def span_corruption_batch(
    tokens: np.ndarray,
    seeds: np.ndarray,
    *,
    vocab_size: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    eos_id: int = EOS_ID,
) -> Features:
    """`span_corruption` of equally long rows tokens [B, n], row i seeded by seeds[i]: features
    [B, ...], row i identical to `span_corruption(tokens[i], seed=seeds[i])`."""
    check_sentinel_vocab(vocab_size, num_specials(eos_id))
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
        raise ValueError(f"tokens must be a 2-D integer array, got {tokens.dtype} {tokens.shape}")
    mask = random_spans_noise_masks(
        tokens.shape[1],
        seeds,
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )
    if mask.shape[0] != tokens.shape[0]:
        raise ValueError(f"{mask.shape[0]} seeds for {tokens.shape[0]} rows of tokens")
    eos = np.full((tokens.shape[0], 1), eos_id, np.int32)
    inputs = np.concatenate([spans_to_sentinels(tokens, mask, int(vocab_size)), eos], axis=1)
    targets = np.concatenate([spans_to_sentinels(tokens, ~mask, int(vocab_size)), eos], axis=1)
    return {"encoder_input_tokens": inputs, **decoder_features(targets)}


def span_corruption(
    tokens: np.ndarray,
    *,
    seed: int,
    vocab_size: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    eos_id: int = EOS_ID,
) -> Features:
    """T5 span corruption (encoder-decoder form).

    inputs = non-noise tokens with each noise span replaced by one sentinel, + EOS;
    targets = each noise span preceded by its sentinel, + EOS. Sentinel i = vocab_size - 1 - i;
    with more than NUM_SENTINELS spans the ids keep counting down into the vocabulary, as in T5.
    568 raw tokens -> 512 inputs, 114 targets (see span_corruption_lengths).
    """
    out = span_corruption_batch(
        as_tokens(tokens)[None],
        seed_array(seed),
        vocab_size=vocab_size,
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
        eos_id=eos_id,
    )
    return {k: v[0] for k, v in out.items()}


def span_corruption_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    return dict(vocab_size=vocab.vocab_size, eos_id=vocab.eos_id)


def span_corruption_stream_lengths(
    seq_len: int, kwargs: Mapping[str, Any]
) -> tuple[int, dict[str, int]]:
    """(raw tokens, {stream: length}): T5's raw length for inputs of seq_len, and the largest
    targets any piece of at most that length can give."""
    density = kwargs.get("noise_density", 0.15)
    mean = kwargs.get("mean_noise_span_length", 3.0)
    raw, targets = span_corruption_lengths(seq_len, density, mean)
    enc_max, dec_max = span_corruption_max_lengths(raw, density, mean)
    if enc_max > seq_len:  # cannot happen with T5's arithmetic; guards a future change of it
        raise ValueError(f"span corruption of {raw} tokens gives {enc_max} > {seq_len} inputs")
    return raw, {"encoder": seq_len, "decoder": max(targets, dec_max)}
