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
    i32,
    num_specials,
    rng,
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
        noise = min(max(int(round(n * density)), 1), n - 1)
        spans = min(max(int(round(noise / mean)), 1), noise, n - noise)
        enc, dec = max(enc, n - noise + spans + 1), max(dec, noise + spans + 1)
    return enc, dec


def random_segmentation(gen: np.random.Generator, num_items: int, num_segments: int) -> np.ndarray:
    """Uniformly random composition of num_items into num_segments positive parts."""
    # Choosing the num_segments-1 cut points among the num_items-1 gaps uniformly makes every
    # composition equally likely, which is what T5's shuffle-of-boundary-flags does.
    cuts = np.sort(gen.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
    return np.diff(np.concatenate([[0], cuts, [num_items]]))


def random_spans_noise_mask(
    length: int, *, seed: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> np.ndarray:
    """T5's random_spans_noise_mask: bool [length], True on noise tokens.

    num_noise = round(length * noise_density) clipped to [1, length-1]; num_spans =
    max(1, round(num_noise / mean_noise_span_length)); noise and non-noise lengths are independent
    uniform compositions into num_spans parts, interleaved non-noise first, so the sequence always
    ends with a noise span (corrupted inputs end with a sentinel, targets start with one).
    """
    check_open_unit("noise_density", noise_density)
    check_positive("mean_noise_span_length", mean_noise_span_length)
    orig_length = int(length)
    length = max(orig_length, 2)  # as T5: avoid degenerate cases, truncate at the end
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_nonnoise = length - num_noise
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    # Departure from T5 only where T5 breaks: a span count above either token count would need
    # empty spans, so cap it (never reached with mean span >= 1 and density <= 0.5).
    num_spans = min(num_spans, num_noise, num_nonnoise)
    gen = rng(seed, STREAM_SPANS)
    noise_lengths = random_segmentation(gen, num_noise, num_spans)
    nonnoise_lengths = random_segmentation(gen, num_nonnoise, num_spans)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise = np.repeat(np.tile([False, True], num_spans), interleaved)
    return is_noise[:orig_length]


def spans_to_sentinels(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> np.ndarray:
    """Replace each run of masked tokens by one sentinel, counting down from vocab_size - 1."""
    prev = np.concatenate([[False], mask[:-1]])
    first = mask & ~prev
    sentinels = vocab_size - np.cumsum(first)
    return np.where(first, sentinels, tokens)[~(mask & prev)].astype(np.int32)


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
    check_open_unit("noise_density", noise_density)
    check_positive("mean_noise_span_length", mean_noise_span_length)
    check_sentinel_vocab(vocab_size, num_specials(eos_id))
    tokens = as_tokens(tokens)
    mask = random_spans_noise_mask(
        tokens.size,
        seed=seed,
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )
    eos = i32([eos_id])
    inputs = np.concatenate([spans_to_sentinels(tokens, mask, int(vocab_size)), eos])
    targets = np.concatenate([spans_to_sentinels(tokens, ~mask, int(vocab_size)), eos])
    return {"encoder_input_tokens": inputs, **decoder_features(targets)}


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
