"""Tests for jaxlm.objectives.mixtures: UL2's denoiser choice, mixture and outputs."""

import math

import numpy as np

from jaxlm import objectives as O

from ._util import MODE_IDS, VOCAB, reconstruct, sentinels


def test_ul2_denoiser_rates_uniform_and_weighted():
    n = 2000
    d = O.DEFAULT_UL2_DENOISERS
    assert len(d) == 7
    counts = np.bincount([O.ul2_choose_denoiser(s, d) for s in range(n)], minlength=len(d))
    sigma = math.sqrt(n * (1 / 7) * (6 / 7))
    assert np.all(np.abs(counts - n / 7) < 4.5 * sigma), counts
    weighted = (
        O.Denoiser("span", 3.0, 0.15, "nlu", 1.0),
        O.Denoiser("prefix", None, None, "s2s", 3.0),
    )
    counts = np.bincount([O.ul2_choose_denoiser(s, weighted) for s in range(n)], minlength=2)
    assert abs(counts[1] / n - 0.75) < 4.5 * math.sqrt(0.75 * 0.25 / n)


def test_ul2_default_mixture_matches_paper():
    by_mode = {}
    for d in O.DEFAULT_UL2_DENOISERS:
        by_mode.setdefault(d.mode, set()).add((d.kind, d.mean_span, d.noise_density))
    assert by_mode["nlu"] == {("span", 3.0, 0.15), ("span", 8.0, 0.15)}
    assert by_mode["s2s"] == {("prefix", None, None)}
    assert by_mode["nlg"] == {
        ("span", 3.0, 0.5), ("span", 8.0, 0.5), ("span", 64.0, 0.15), ("span", 64.0, 0.5)
    }


def test_ul2_outputs_carry_mode_token_and_match_denoiser():
    tokens = np.arange(10, 10 + 300, dtype=np.int32)
    seen = set()
    for seed in range(80):
        i = O.ul2_choose_denoiser(seed, O.DEFAULT_UL2_DENOISERS)
        d = O.DEFAULT_UL2_DENOISERS[i]
        seen.add(i)
        out = O.ul2(tokens, seed=seed, vocab_size=VOCAB, mode_ids=MODE_IDS)
        enc = out["encoder_input_tokens"]
        assert enc[0] == MODE_IDS[d.mode]
        if d.kind == "span":
            ref = O.span_corruption(
                tokens, seed=seed, vocab_size=VOCAB, noise_density=d.noise_density,
                mean_noise_span_length=d.mean_span,
            )
            k = sentinels(enc[1:]).size
            np.testing.assert_array_equal(sentinels(enc[1:]), VOCAB - 1 - np.arange(k))
            np.testing.assert_array_equal(
                sentinels(out["decoder_target_tokens"]), VOCAB - 1 - np.arange(k)
            )
            assert out["decoder_target_tokens"].size - 1 - k == round(300 * d.noise_density)
            assert reconstruct(enc[1:], out["decoder_target_tokens"], VOCAB) == tokens.tolist()
        else:
            ref = O.prefix_lm_encoder_decoder(tokens, seed=seed)
        np.testing.assert_array_equal(enc[1:], ref["encoder_input_tokens"])
        for key in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"):
            np.testing.assert_array_equal(out[key], ref[key])
    assert seen == set(range(7))
