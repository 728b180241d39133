"""What every objective shares: argument checks, the random streams, the decoder features.

Randomness comes only from the example seed and a stream: `np.random.default_rng` seeded inside
each call from (stream, seed), or counter-based keys (`mix_seeds(seed, stream << 40 | counter)`)
where an objective also runs on a whole batch at once. So an example is a pure function of its
tokens and seed: identical in numpy, in tf.data, alone or in a batch, across hosts and after a
restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxlm.conventions import EOS_ID, NUM_SENTINELS, PAD_ID, UNK_ID

Features = dict[str, np.ndarray]
# (seq_len, objective kwargs) -> (raw tokens per example, {stream: row length}), streams in order.
Lengths = Callable[[int, Mapping[str, Any]], tuple[int, dict[str, int]]]

# Independent random streams per use, so that e.g. the UL2 denoiser choice and the chosen
# denoiser's own noise never share random numbers even though they share the example seed.
STREAM_MLM = 1
STREAM_SPANS = 2
STREAM_PREFIX = 3
STREAM_UL2_CHOICE = 4
STREAM_BART_SPANS = 5
STREAM_SENTENCES = 6
STREAM_DESHUFFLE = 7
STREAM_HYBRID_MODE = 8
STREAM_NSP = 9
STREAM_BART_RANDOM = 10
STREAM_NSP_OTHER = 11  # the pipeline's draw of another document (jaxlm/data/negatives.py)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix_seeds(*keys: Any) -> np.ndarray:
    """splitmix64 chained over broadcast int keys -> int64 in [0, 2**63).

    The pipeline seeds an example by (seed, process, epoch, document, piece) in greedy / none and
    (seed, process, epoch, document, offset) of a chunk's first token in concat, so an example's
    randomness depends only on where its tokens come from: the same after a restart. Objectives
    that run on a batch draw counter-based keys with it: (example seed, stream << 40 | counter).
    """
    h = np.zeros((), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in keys:  # broadcast round by round: leading scalar keys cost scalar work
            x = h ^ (np.asarray(k, dtype=np.int64).view(np.uint64) + _GOLDEN)
            x = (x ^ (x >> np.uint64(30))) * _M1
            x = (x ^ (x >> np.uint64(27))) * _M2
            h = x ^ (x >> np.uint64(31))
    return np.asarray(h >> np.uint64(1)).astype(np.int64)


def _unsigned(seed: int) -> int:
    # Seeds may arrive as negative int64 from tf.data; map them onto uint64 instead of failing.
    return int(seed) % (1 << 64)


def seed_array(seed: int) -> np.ndarray:
    """[1] int64 of one example seed, any Python int taken mod 2**64 (as `rng` takes it)."""
    return np.array([_unsigned(seed)], dtype=np.uint64).view(np.int64)


def rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of `stream` for an example seed."""
    return np.random.default_rng([stream, _unsigned(seed)])


def as_tokens(tokens: Any) -> np.ndarray:
    """A 1-D int32 token array, or a ValueError."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int32, copy=False)


def i32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.int32)


def shift_right(targets: np.ndarray, start_id: int = PAD_ID) -> np.ndarray:
    """T5X autoregressive inputs: `targets` shifted right by one along the last axis, `start_id`
    first (each row of a batch [B, n] on its own)."""
    targets = i32(targets)
    out = np.empty_like(targets)
    if targets.shape[-1]:
        out[..., 0] = start_id
        out[..., 1:] = targets[..., :-1]
    return out


def decoder_features(targets: np.ndarray) -> Features:
    """decoder_{target,input}_tokens and decoder_loss_weights (1 off padding) of a target stream."""
    targets = i32(targets)
    return {
        "decoder_target_tokens": targets,
        "decoder_input_tokens": shift_right(targets),
        "decoder_loss_weights": (targets != PAD_ID).astype(np.int32),
    }


def check_open_unit(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def check_unit(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_positive(name: str, value: float) -> None:
    if not float(value) > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_sentinel_vocab(vocab_size: int, num_specials: int) -> None:
    need = NUM_SENTINELS + num_specials
    if int(vocab_size) < need:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: {NUM_SENTINELS} sentinels plus "
            f"{num_specials} special ids need vocab_size >= {need}"
        )


def num_specials(eos_id: int) -> int:
    """pad, eos, unk and `eos_id`, counted once each."""
    return len({PAD_ID, EOS_ID, UNK_ID, int(eos_id)})


def no_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    """For objectives that take nothing from the vocabulary."""
    del vocab
    return {}


def eos_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    return {"eos_id": vocab.eos_id}


def same_lengths(stream: str) -> Lengths:
    """Lengths of an objective whose output is as long as its input, in one stream."""

    def lengths(seq_len: int, kwargs: Mapping[str, Any]) -> tuple[int, dict[str, int]]:
        del kwargs
        return seq_len, {stream: seq_len}

    return lengths


def pair_lengths(seq_len: int, kwargs: Mapping[str, Any]) -> tuple[int, dict[str, int]]:
    """Encoder-decoder forms that append EOS to inputs of at most seq_len - 1 raw tokens."""
    del kwargs
    return seq_len - 1, {"encoder": seq_len, "decoder": seq_len}
