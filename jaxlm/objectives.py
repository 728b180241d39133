"""Pretraining objectives as pure-numpy batch transforms.

Each objective turns ONE 1-D int32 token array (already tokenized, no EOS) and an int seed into a
dict of named int32 1-D features with the seqio / T5X names:

  clm              decoder_{input,target}_tokens, decoder_loss_weights
  mlm              encoder_{input,target}_tokens, encoder_loss_weights            (BERT)
  span_corruption  encoder_input_tokens, decoder_{input,target}_tokens, decoder_loss_weights (T5)
  prefix_lm        decoder-only: decoder_* + decoder_causal_attention             (T5X prefix LM)
  ul2              encoder-decoder mixture of denoisers with a mode token          (UL2)

Conventions (T5): pad 0, eos 1, unk 2; sentinel i is `vocab_size - 1 - i`; decoder_input_tokens is
the target stream shifted right by one with 0 as the start token. Outputs are NOT padded: their
lengths follow the input length (and, for span corruption / UL2, the noise arithmetic); the data
pipeline pads or packs them to the model's lengths.

Randomness comes only from `np.random.default_rng` seeded inside each call from (stream, seed), so
an example is a pure function of its tokens and seed: identical in numpy, in tf.data
(`tf_objective_fn`), across hosts and after a restart. Nothing here imports jax or tensorflow at
module level.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
# T5 reserves 100 sentinels (<extra_id_0> .. <extra_id_99>) at the top of the vocabulary.
NUM_SENTINELS = 100

Features = dict[str, np.ndarray]

# Independent random streams per use, so that e.g. the UL2 denoiser choice and the chosen
# denoiser's own noise never share random numbers even though they share the example seed.
_STREAM_MLM = 1
_STREAM_SPANS = 2
_STREAM_PREFIX = 3
_STREAM_UL2_CHOICE = 4


# ----------------------------------------------------------------------------------------------
# Small helpers


def _rng(seed: int, stream: int) -> np.random.Generator:
    # Seeds may arrive as negative int64 from tf.data; map them onto uint64 instead of failing.
    return np.random.default_rng([stream, int(seed) % (1 << 64)])


def _as_tokens(tokens: Any) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int32, copy=False)


def _i32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.int32)


def shift_right(targets: np.ndarray, start_id: int = PAD_ID) -> np.ndarray:
    """T5X autoregressive inputs: `targets` shifted right by one, `start_id` first."""
    targets = _i32(targets)
    if targets.size == 0:
        return targets.copy()
    return np.concatenate([_i32([start_id]), targets[:-1]])


def _decoder_features(targets: np.ndarray) -> Features:
    targets = _i32(targets)
    return {
        "decoder_target_tokens": targets,
        "decoder_input_tokens": shift_right(targets),
        "decoder_loss_weights": (targets != PAD_ID).astype(np.int32),
    }


def _check_open_unit(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not float(value) > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_sentinel_vocab(vocab_size: int, num_specials: int) -> None:
    need = NUM_SENTINELS + num_specials
    if int(vocab_size) < need:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: {NUM_SENTINELS} sentinels plus "
            f"{num_specials} special ids need vocab_size >= {need}"
        )


# ----------------------------------------------------------------------------------------------
# Causal LM


def clm(tokens: np.ndarray) -> Features:
    """Causal LM (GPT): predict every token from the ones before it."""
    return _decoder_features(_as_tokens(tokens))


# ----------------------------------------------------------------------------------------------
# Masked LM


def _draw_non_special(
    rng: np.random.Generator, n: int, vocab_size: int, specials: np.ndarray
) -> np.ndarray:
    """n ids uniform over [0, vocab_size) minus `specials` (sorted, unique, in range)."""
    r = rng.integers(0, vocab_size - specials.size, size=n)
    # Map the k-th non-special rank to its id: the id is r plus the number of specials at or
    # below it. With shifted[i] = specials[i] - i, that count is the number of shifted values
    # <= r (specials sorted and unique), one vectorised search instead of a loop over specials.
    shifted = specials - np.arange(specials.size)
    return (r + np.searchsorted(shifted, r, side="right")).astype(np.int32)


def _select_whole_words(
    rng: np.random.Generator, eligible: np.ndarray, starts: np.ndarray, budget: int
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
    order = rng.permutation(len(words))
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
    _check_open_unit("mask_rate", mask_rate)
    _check_unit("mask_token_fraction", mask_token_fraction)
    _check_unit("random_token_fraction", random_token_fraction)
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
    tokens = _as_tokens(tokens)
    starts = None
    if whole_word_starts is not None:
        starts = np.asarray(whole_word_starts, dtype=bool)
        if starts.shape != tokens.shape:
            raise ValueError(
                f"whole_word_starts must have the shape of tokens {tokens.shape}, "
                f"got {starts.shape}"
            )

    rng = _rng(seed, _STREAM_MLM)
    eligible = ~np.isin(tokens, specials)
    n_eligible = int(eligible.sum())
    budget = max(1, int(round(mask_rate * n_eligible))) if n_eligible else 0
    if budget == 0:
        selected = np.zeros(0, dtype=np.int64)
    elif starts is None:
        selected = np.sort(rng.choice(np.flatnonzero(eligible), size=budget, replace=False))
    else:
        selected = _select_whole_words(rng, eligible, starts, budget)

    inputs = tokens.copy()
    u = rng.random(selected.size)
    to_mask = selected[u < mask_token_fraction]
    to_random = selected[
        (u >= mask_token_fraction) & (u < mask_token_fraction + random_token_fraction)
    ]
    inputs[to_mask] = mask_id
    inputs[to_random] = _draw_non_special(rng, to_random.size, int(vocab_size), specials)
    weights = np.zeros(tokens.shape, dtype=np.int32)
    weights[selected] = 1
    return {
        "encoder_input_tokens": inputs,
        "encoder_target_tokens": tokens.copy(),
        "encoder_loss_weights": weights,
    }


# ----------------------------------------------------------------------------------------------
# Span corruption (T5)


def span_corruption_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(raw tokens length, targets length) so that corrupted inputs + EOS fit `inputs_length`.

    T5's random_spans_helper (one sentinel per span, EOS on both sides): the largest raw length
    whose corrupted inputs, EOS included, are <= inputs_length. 512 -> (568, 114).
    """
    _check_open_unit("noise_density", noise_density)
    _check_positive("mean_noise_span_length", mean_noise_span_length)
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


def _random_segmentation(rng: np.random.Generator, num_items: int, num_segments: int) -> np.ndarray:
    """Uniformly random composition of num_items into num_segments positive parts."""
    # Choosing the num_segments-1 cut points among the num_items-1 gaps uniformly makes every
    # composition equally likely, which is what T5's shuffle-of-boundary-flags does.
    cuts = np.sort(rng.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
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
    _check_open_unit("noise_density", noise_density)
    _check_positive("mean_noise_span_length", mean_noise_span_length)
    orig_length = int(length)
    length = max(orig_length, 2)  # as T5: avoid degenerate cases, truncate at the end
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_nonnoise = length - num_noise
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    # Departure from T5 only where T5 breaks: a span count above either token count would need
    # empty spans, so cap it (never reached with mean span >= 1 and density <= 0.5).
    num_spans = min(num_spans, num_noise, num_nonnoise)
    rng = _rng(seed, _STREAM_SPANS)
    noise_lengths = _random_segmentation(rng, num_noise, num_spans)
    nonnoise_lengths = _random_segmentation(rng, num_nonnoise, num_spans)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise = np.repeat(np.tile([False, True], num_spans), interleaved)
    return is_noise[:orig_length]


def _spans_to_sentinels(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> np.ndarray:
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
    _check_open_unit("noise_density", noise_density)
    _check_positive("mean_noise_span_length", mean_noise_span_length)
    _check_sentinel_vocab(vocab_size, len({PAD_ID, EOS_ID, UNK_ID, int(eos_id)}))
    tokens = _as_tokens(tokens)
    mask = random_spans_noise_mask(
        tokens.size,
        seed=seed,
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )
    eos = _i32([eos_id])
    inputs = np.concatenate([_spans_to_sentinels(tokens, mask, int(vocab_size)), eos])
    targets = np.concatenate([_spans_to_sentinels(tokens, ~mask, int(vocab_size)), eos])
    return {"encoder_input_tokens": inputs, **_decoder_features(targets)}


# ----------------------------------------------------------------------------------------------
# Prefix LM


def _prefix_split(length: int, seed: int) -> int:
    # T5's random_prefix_noise_mask at density 0.5: prefix length uniform on [1, length-1];
    # sequences shorter than 2 get an empty prefix (all targets), as in T5.
    if length < 2:
        return 0
    return int(_rng(seed, _STREAM_PREFIX).integers(1, length))


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
    tokens = _as_tokens(tokens)
    split = _prefix_split(tokens.size, seed)
    features = _decoder_features(tokens)
    positions = np.arange(tokens.size)
    features["decoder_loss_weights"] *= (positions >= split).astype(np.int32)
    features["decoder_causal_attention"] = (positions < split + 1).astype(np.int32)
    return features


def prefix_lm_encoder_decoder(tokens: np.ndarray, *, seed: int, eos_id: int = EOS_ID) -> Features:
    """Encoder-decoder prefix LM: encoder gets prefix + EOS, decoder predicts the rest + EOS."""
    tokens = _as_tokens(tokens)
    split = _prefix_split(tokens.size, seed)
    eos = _i32([eos_id])
    return {
        "encoder_input_tokens": np.concatenate([tokens[:split], eos]),
        **_decoder_features(np.concatenate([tokens[split:], eos])),
    }


def mlm_encoder_decoder(
    tokens: np.ndarray, *, seed: int, vocab_size: int, mask_id: int, eos_id: int = EOS_ID,
    **mlm_options: Any,
) -> Features:
    """T5's "BERT-style" objective (Table 4) on an encoder-decoder: the encoder reads the text
    corrupted by `mlm` (same selection and replacement options), the decoder reproduces the whole
    original text + EOS."""
    tokens = _as_tokens(tokens)
    corrupted = mlm(tokens, seed=seed, vocab_size=vocab_size, mask_id=mask_id, **mlm_options)
    eos = _i32([eos_id])
    return {
        "encoder_input_tokens": np.concatenate([corrupted["encoder_input_tokens"], eos]),
        **_decoder_features(np.concatenate([tokens, eos])),
    }


# ----------------------------------------------------------------------------------------------
# UL2 mixture of denoisers

UL2_MODES = ("nlu", "s2s", "nlg")


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """One UL2 denoiser.

    kind: 'span' (T5 span corruption with mean_span, noise_density) or 'prefix' (prefix LM,
    split uniform over the sequence; mean_span and noise_density must be None).
    mode: 'nlu' | 's2s' | 'nlg', whose token is prepended to the encoder inputs.
    weight: relative sampling weight (> 0).
    """

    kind: str
    mean_span: float | None
    noise_density: float | None
    mode: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("span", "prefix"):
            raise ValueError(f"Denoiser kind must be 'span' or 'prefix', got {self.kind!r}")
        if self.mode not in UL2_MODES:
            raise ValueError(f"Denoiser mode must be one of {UL2_MODES}, got {self.mode!r}")
        _check_positive("weight", self.weight)
        if self.kind == "span":
            if self.mean_span is None or self.noise_density is None:
                raise ValueError("a 'span' Denoiser needs mean_span and noise_density")
            _check_positive("mean_span", self.mean_span)
            _check_open_unit("noise_density", self.noise_density)
        elif self.mean_span is not None or self.noise_density is not None:
            raise ValueError(
                "mean_span and noise_density are not used by a 'prefix' Denoiser; pass None"
            )


# UL2 paper (Tay et al. 2022), uniform weights: R (mean 3 and 8 at 15%, [NLU]), S (prefix LM,
# [S2S]), X (mean 3 and 8 at 50%, mean 64 at 15% and 50%, [NLG]).
DEFAULT_UL2_DENOISERS: tuple[Denoiser, ...] = (
    Denoiser("span", 3.0, 0.15, "nlu"),
    Denoiser("span", 8.0, 0.15, "nlu"),
    Denoiser("prefix", None, None, "s2s"),
    Denoiser("span", 3.0, 0.5, "nlg"),
    Denoiser("span", 8.0, 0.5, "nlg"),
    Denoiser("span", 64.0, 0.15, "nlg"),
    Denoiser("span", 64.0, 0.5, "nlg"),
)


def _check_denoisers(denoisers: Sequence[Denoiser]) -> None:
    if len(denoisers) == 0 or not all(isinstance(d, Denoiser) for d in denoisers):
        raise ValueError(f"denoisers must be a non-empty sequence of Denoiser, got {denoisers!r}")


def ul2_choose_denoiser(seed: int, denoisers: Sequence[Denoiser] = DEFAULT_UL2_DENOISERS) -> int:
    """Index of the denoiser that `ul2` applies for this seed (drawn by weight)."""
    _check_denoisers(denoisers)
    cum = np.cumsum([float(d.weight) for d in denoisers])
    u = _rng(seed, _STREAM_UL2_CHOICE).random() * cum[-1]
    return min(int(np.searchsorted(cum, u, side="right")), len(denoisers) - 1)


def ul2(
    tokens: np.ndarray,
    *,
    seed: int,
    vocab_size: int,
    mode_ids: Mapping[str, int],
    denoisers: Sequence[Denoiser] = DEFAULT_UL2_DENOISERS,
    eos_id: int = EOS_ID,
) -> Features:
    """UL2 mixture of denoisers, encoder-decoder form.

    The seed picks one denoiser (`ul2_choose_denoiser`); its output gets the mode token
    (mode_ids['nlu' | 's2s' | 'nlg']) prepended to encoder_input_tokens. Denoisers produce
    different lengths from the same input; the pipeline pads / packs them.
    """
    _check_denoisers(denoisers)
    missing = sorted({d.mode for d in denoisers} - set(mode_ids))
    if missing:
        raise ValueError(f"mode_ids lacks the modes {missing}; it needs keys {list(UL2_MODES)}")
    _check_sentinel_vocab(vocab_size, len({PAD_ID, EOS_ID, UNK_ID, int(eos_id)}) + len(mode_ids))
    for mode, mid in mode_ids.items():
        if not 0 <= int(mid) < int(vocab_size) - NUM_SENTINELS:
            raise ValueError(
                f"mode_ids[{mode!r}]={mid} must be in [0, vocab_size - {NUM_SENTINELS}) so it "
                "cannot collide with a sentinel"
            )
    d = denoisers[ul2_choose_denoiser(seed, denoisers)]
    if d.kind == "span":
        out = span_corruption(
            tokens,
            seed=seed,
            vocab_size=vocab_size,
            noise_density=float(d.noise_density),
            mean_noise_span_length=float(d.mean_span),
            eos_id=eos_id,
        )
    else:
        out = prefix_lm_encoder_decoder(tokens, seed=seed, eos_id=eos_id)
    out["encoder_input_tokens"] = np.concatenate(
        [_i32([mode_ids[d.mode]]), out["encoder_input_tokens"]]
    )
    return out


# ----------------------------------------------------------------------------------------------
# Registry and tf.data form

# The objective names a config may name (config.objective).
OBJECTIVES = ("clm", "mlm", "span_corruption", "prefix_lm", "ul2")

_REGISTRY: dict[str, Callable[..., Features]] = {
    "clm": clm,
    "mlm": mlm,
    "span_corruption": span_corruption,
    "prefix_lm": prefix_lm,
    # The encoder-decoder form of prefix LM, for encoder-decoder models.
    "prefix_lm_encoder_decoder": prefix_lm_encoder_decoder,
    # The encoder-decoder form of MLM (T5's "BERT-style").
    "mlm_encoder_decoder": mlm_encoder_decoder,
    "ul2": ul2,
}

_ENC_DEC_KEYS = (
    "encoder_input_tokens",
    "decoder_target_tokens",
    "decoder_input_tokens",
    "decoder_loss_weights",
)
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "clm": ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"),
    "mlm": ("encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights"),
    "span_corruption": _ENC_DEC_KEYS,
    "prefix_lm": (
        "decoder_target_tokens",
        "decoder_input_tokens",
        "decoder_loss_weights",
        "decoder_causal_attention",
    ),
    "prefix_lm_encoder_decoder": _ENC_DEC_KEYS,
    "mlm_encoder_decoder": _ENC_DEC_KEYS,
    "ul2": _ENC_DEC_KEYS,
}


def get_objective(name: str, **kwargs: Any) -> Callable[[np.ndarray, int], Features]:
    """`fn(tokens, seed) -> features` with `kwargs` bound; arguments are checked here, eagerly."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; valid names: {sorted(_REGISTRY)}")
    fn = _REGISTRY[name]
    seeded = "seed" in inspect.signature(fn).parameters
    if "seed" in kwargs or "tokens" in kwargs:
        raise ValueError(f"objective {name!r}: tokens and seed are call arguments, not kwargs")

    def bound(tokens: np.ndarray, seed: int) -> Features:
        return fn(tokens, seed=seed, **kwargs) if seeded else fn(tokens, **kwargs)

    # One call on an empty sequence runs every argument check of the objective now, so a bad
    # config fails before any pipeline is built (and missing / unknown kwargs are caught too).
    try:
        bound(np.zeros(0, np.int32), 0)
    except TypeError as e:
        raise ValueError(f"objective {name!r}: {e}") from None
    return bound


def tf_objective_fn(
    name: str, output_keys: Sequence[str] | None = None, **kwargs: Any
) -> Callable[[Any, Any], dict[str, Any]]:
    """The objective as a `dataset.map` function `(tokens int32 [None], seed int64 []) -> dict`.

    Wraps the same numpy function in `tf.numpy_function`, so pipeline examples are bit-identical
    to the numpy ones for the same seeds. output_keys defaults to all of the objective's features.
    """
    import tensorflow as tf  # lazy: only the tf.data pipeline needs it

    fn = get_objective(name, **kwargs)
    keys = tuple(OUTPUT_KEYS[name] if output_keys is None else output_keys)
    unknown = [k for k in keys if k not in OUTPUT_KEYS[name]]
    if unknown or not keys:
        raise ValueError(
            f"output_keys {list(keys)} for objective {name!r} must be a non-empty subset of "
            f"{list(OUTPUT_KEYS[name])}"
        )

    def np_fn(tokens: np.ndarray, seed: np.ndarray) -> list[np.ndarray]:
        features = fn(tokens, int(seed))
        return [features[k] for k in keys]

    def map_fn(tokens: Any, seed: Any) -> dict[str, Any]:
        values = tf.numpy_function(
            np_fn,
            [tf.cast(tokens, tf.int32), tf.cast(seed, tf.int64)],
            [tf.int32] * len(keys),
            stateful=False,  # a pure function of its inputs: tf.data may cache / reorder freely
        )
        out = {}
        for k, v in zip(keys, values):
            v.set_shape([None])
            out[k] = v
        return out

    return map_fn
