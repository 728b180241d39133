"""UL2's mixture of denoisers: span corruption and prefix LM, each with its mode token."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlm.conventions import EOS_ID, NUM_SENTINELS
from jaxlm.objectives.common import (
    STREAM_UL2_CHOICE,
    Features,
    check_open_unit,
    check_positive,
    check_sentinel_vocab,
    i32,
    num_specials,
    rng,
)
from jaxlm.objectives.denoising import span_corruption, span_corruption_max_lengths
from jaxlm.objectives.lm import prefix_lm_encoder_decoder

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
        check_positive("weight", self.weight)
        if self.kind == "span":
            if self.mean_span is None or self.noise_density is None:
                raise ValueError("a 'span' Denoiser needs mean_span and noise_density")
            check_positive("mean_span", self.mean_span)
            check_open_unit("noise_density", self.noise_density)
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


def check_denoisers(denoisers: Sequence[Denoiser]) -> None:
    if len(denoisers) == 0 or not all(isinstance(d, Denoiser) for d in denoisers):
        raise ValueError(f"denoisers must be a non-empty sequence of Denoiser, got {denoisers!r}")


def ul2_choose_denoiser(seed: int, denoisers: Sequence[Denoiser] = DEFAULT_UL2_DENOISERS) -> int:
    """Index of the denoiser that `ul2` applies for this seed (drawn by weight)."""
    check_denoisers(denoisers)
    cum = np.cumsum([float(d.weight) for d in denoisers])
    u = rng(seed, STREAM_UL2_CHOICE).random() * cum[-1]
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
    check_denoisers(denoisers)
    missing = sorted({d.mode for d in denoisers} - set(mode_ids))
    if missing:
        raise ValueError(f"mode_ids lacks the modes {missing}; it needs keys {list(UL2_MODES)}")
    check_sentinel_vocab(vocab_size, num_specials(eos_id) + len(mode_ids))
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
        [i32([mode_ids[d.mode]]), out["encoder_input_tokens"]]
    )
    return out


def ul2_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    return dict(vocab_size=vocab.vocab_size, mode_ids=vocab.mode_ids, eos_id=vocab.eos_id)


def ul2_stream_lengths(seq_len: int, kwargs: Mapping[str, Any]) -> tuple[int, dict[str, int]]:
    """(raw tokens, {stream: length}): pieces of seq_len - 2 tokens (+ mode token + EOS), the
    decoder as long as the longest target of any denoiser on any piece, at least seq_len."""
    raw = seq_len - 2
    dec = 2
    for d in kwargs.get("denoisers", DEFAULT_UL2_DENOISERS):
        if d.kind == "span":
            enc_max, dec_max = span_corruption_max_lengths(raw, d.noise_density, d.mean_span)
            if enc_max + 1 > seq_len:
                raise ValueError(f"UL2 denoiser {d} gives {enc_max + 1} > {seq_len} inputs")
            dec = max(dec, dec_max)
        else:
            dec = max(dec, raw)
    return raw, {"encoder": seq_len, "decoder": max(seq_len, dec)}
