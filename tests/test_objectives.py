"""Tests for jaxlm.objectives: T5 / BERT / T5X / UL2 reference numbers and distributions."""

import math

import numpy as np
import pytest

from jaxlm import objectives as O

VOCAB = 32128  # T5's vocabulary size
EOS = 1
MODE_IDS = {"nlu": 4, "s2s": 5, "nlg": 6}


# ----------------------------------------------------------------------------------------------
# Statistics helpers (scipy is not a dependency)


def chi2_pvalue(stat: float, df: int) -> float:
    """Upper tail of chi-square(df) by the Wilson-Hilferty cube-root normal approximation."""
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_gof(observed: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """p-value of a chi-square goodness of fit; tail bins with small expectation are pooled."""
    observed = np.asarray(observed, dtype=float)
    probs = np.asarray(probs, dtype=float)
    if np.any((probs == 0) & (observed > 0)):
        return 0.0  # an impossible value was observed
    observed, probs = observed[probs > 0], probs[probs > 0]
    expected = probs * observed.sum()
    small = np.flatnonzero(expected < min_expected)
    if small.size:  # the distributions tested here decay, so small bins form the tail
        cut = max(int(small[0]), 1)
        observed = np.append(observed[:cut], observed[cut:].sum())
        expected = np.append(expected[:cut], expected[cut:].sum())
    stat = float(((observed - expected) ** 2 / expected).sum())
    return chi2_pvalue(stat, max(observed.size - 1, 1))


def test_chi2_pvalue_matches_known_quantiles():
    # Tabulated 95% / 99.9% quantiles of chi-square.
    assert chi2_pvalue(18.307, 10) == pytest.approx(0.05, abs=0.003)
    assert chi2_pvalue(29.588, 10) == pytest.approx(0.001, abs=0.0003)
    assert chi2_pvalue(124.342, 100) == pytest.approx(0.05, abs=0.002)


# ----------------------------------------------------------------------------------------------
# Causal LM


def test_clm_shift_right_and_weights():
    tokens = np.array([5, 6, 7, 8, 0, 0], np.int32)
    out = O.clm(tokens)
    np.testing.assert_array_equal(out["decoder_target_tokens"], tokens)
    np.testing.assert_array_equal(out["decoder_input_tokens"], [0, 5, 6, 7, 8, 0])
    np.testing.assert_array_equal(out["decoder_loss_weights"], [1, 1, 1, 1, 0, 0])
    assert all(v.dtype == np.int32 for v in out.values())


# ----------------------------------------------------------------------------------------------
# Span corruption


def reconstruct(inputs: np.ndarray, targets: np.ndarray, vocab_size: int) -> list[int]:
    """Rebuild the original sequence from span-corruption inputs and targets."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    is_sentinel = lambda t: t >= vocab_size - O.NUM_SENTINELS  # noqa: E731
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets[:-1].tolist():
        if is_sentinel(t):
            current = t
            spans[t] = []
        else:
            spans[current].append(t)  # KeyError if targets do not start with a sentinel
    out: list[int] = []
    for t in inputs[:-1].tolist():
        out.extend(spans.pop(t) if is_sentinel(t) else [t])
    assert not spans, "targets hold spans that the inputs never reference"
    return out


def _sentinels(x: np.ndarray) -> np.ndarray:
    return x[x >= VOCAB - O.NUM_SENTINELS]


def test_span_corruption_lengths_t5_reference():
    assert O.span_corruption_lengths(512) == (568, 114)
    assert O.span_corruption_lengths(512, 0.15, 3.0) == (568, 114)
    # Every returned raw length must produce exactly inputs_length after corruption.
    for inputs_length in (64, 128, 256, 1024):
        raw, targets_len = O.span_corruption_lengths(inputs_length)
        out = O.span_corruption(np.arange(10, 10 + raw), seed=0, vocab_size=VOCAB)
        assert out["encoder_input_tokens"].size == inputs_length
        assert out["decoder_target_tokens"].size == targets_len


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_span_corruption_t5_reference_shapes(seed):
    tokens = np.arange(10, 10 + 568, dtype=np.int32)
    out = O.span_corruption(tokens, seed=seed, vocab_size=VOCAB)
    inputs, targets = out["encoder_input_tokens"], out["decoder_target_tokens"]
    assert inputs.size == 512 and targets.size == 114
    assert inputs[-1] == EOS and targets[-1] == EOS
    expected_sentinels = VOCAB - 1 - np.arange(28)
    np.testing.assert_array_equal(_sentinels(inputs), expected_sentinels)
    np.testing.assert_array_equal(_sentinels(targets), expected_sentinels)
    # T5 interleaves non-noise first and noise last: inputs end with a sentinel, targets start
    # with one, and neither has two sentinels in a row (no empty spans).
    assert inputs[-2] == VOCAB - 28 and inputs[0] < VOCAB - O.NUM_SENTINELS
    assert targets[0] == VOCAB - 1
    for x in (inputs, targets):
        s = x >= VOCAB - O.NUM_SENTINELS
        assert not np.any(s[1:] & s[:-1])
    assert reconstruct(inputs, targets, VOCAB) == tokens.tolist()
    assert (targets.size - 1 - 28) == 85  # noise tokens
    np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, targets[:-1]])
    np.testing.assert_array_equal(out["decoder_loss_weights"], np.ones(114))
    assert all(v.dtype == np.int32 for v in out.values())


def test_span_corruption_deterministic_per_seed():
    tokens = np.arange(10, 10 + 568, dtype=np.int32)
    a = O.span_corruption(tokens, seed=7, vocab_size=VOCAB)
    b = O.span_corruption(tokens, seed=7, vocab_size=VOCAB)
    c = O.span_corruption(tokens, seed=8, vocab_size=VOCAB)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["encoder_input_tokens"], c["encoder_input_tokens"])


def test_span_corruption_reconstructs_other_rates_and_short_inputs():
    rng = np.random.default_rng(0)
    for seed in range(40):
        n = int(rng.integers(0, 300))
        tokens = rng.integers(10, 30000, size=n).astype(np.int32)
        density = float(rng.choice([0.15, 0.5]))
        mean = float(rng.choice([3.0, 8.0, 64.0]))
        out = O.span_corruption(
            tokens, seed=seed, vocab_size=VOCAB, noise_density=density, mean_noise_span_length=mean
        )
        assert reconstruct(out["encoder_input_tokens"], out["decoder_target_tokens"], VOCAB) == (
            tokens.tolist()
        )
        if n >= 2:
            mask = O.random_spans_noise_mask(
                n, seed=seed, noise_density=density, mean_noise_span_length=mean
            )
            assert mask.sum() == min(max(round(n * density), 1), n - 1)


def _noise_span_lengths(mask: np.ndarray) -> np.ndarray:
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _composition_pmf(n: int, k: int) -> np.ndarray:
    """P(len = j), j = 1..n-k+1, of one part of a uniform composition of n into k parts."""
    j = np.arange(1, n - k + 2)
    return np.array([math.comb(n - jj - 1, k - 2) for jj in j], float) / math.comb(n - 1, k - 1)


def test_span_length_distribution_is_uniform_composition():
    n_noise, k = 85, 28
    pmf = _composition_pmf(n_noise, k)
    assert pmf.sum() == pytest.approx(1.0)
    lengths = []
    for seed in range(3000):
        mask = O.random_spans_noise_mask(568, seed=seed)
        spans = _noise_span_lengths(mask)
        assert spans.size == k and spans.sum() == n_noise
        assert mask[-1]  # the last span is noise
        lengths.append(spans)
    lengths = np.concatenate(lengths)
    observed = np.bincount(lengths, minlength=pmf.size + 1)[1:]
    assert observed.size == pmf.size
    assert chi2_gof(observed, pmf) > 1e-3

    # The test has power: the same observations reject plausible wrong span-length laws ...
    j = np.arange(1, pmf.size + 1)
    p = k / n_noise  # geometric with the right mean
    geometric = (1 - p) ** (j - 1) * p
    geometric[-1] += 1 - geometric.sum()
    fixed3 = (j == 3).astype(float)
    for wrong in (geometric, fixed3):
        assert chi2_gof(observed, wrong) < 1e-6
    # ... and samples from a wrong law (independent geometric spans) are rejected against pmf.
    fake = np.random.default_rng(0).geometric(p, size=lengths.size)
    fake_counts = np.bincount(np.minimum(fake, pmf.size), minlength=pmf.size + 1)[1:]
    assert chi2_gof(fake_counts, pmf) < 1e-6


# ----------------------------------------------------------------------------------------------
# Masked LM

SPECIALS = (0, 1, 2, 7)  # pad, eos, unk, a mode token
MASK_ID = 4  # not listed in SPECIALS on purpose: mlm always treats mask_id as special


def _mlm_corpus(n_examples=200, length=512, vocab=1000, seed=0):
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n_examples):
        x = rng.integers(8, vocab, size=length).astype(np.int32)
        sp = rng.random(length) < 0.05
        x[sp] = rng.choice([1, 2, 7, MASK_ID], size=int(sp.sum()))
        if i % 3 == 0:
            x[-30:] = 0  # padded tail
        examples.append(x)
    return examples


def test_mlm_bert_rates_and_specials():
    vocab = 1000
    n_sel = n_mask = n_random = n_keep = 0
    for seed, x in enumerate(_mlm_corpus(vocab=vocab)):
        out = O.mlm(x, seed=seed, vocab_size=vocab, mask_id=MASK_ID, special_ids=SPECIALS)
        w = out["encoder_loss_weights"].astype(bool)
        inp = out["encoder_input_tokens"]
        np.testing.assert_array_equal(out["encoder_target_tokens"], x)
        eligible = ~np.isin(x, SPECIALS + (MASK_ID,))
        assert not np.any(w & ~eligible), "a special / pad / mask token was selected"
        assert w.sum() == round(0.15 * eligible.sum())
        np.testing.assert_array_equal(inp[~w], x[~w])  # only selected positions change
        sel_in, sel_orig = inp[w], x[w]
        is_mask = sel_in == MASK_ID
        is_random = ~is_mask & (sel_in != sel_orig)
        assert not np.any(np.isin(sel_in[is_random], SPECIALS + (MASK_ID,)))
        assert np.all((sel_in >= 0) & (sel_in < vocab))
        n_sel += w.sum()
        n_mask += is_mask.sum()
        n_random += is_random.sum()
        n_keep += (sel_in == sel_orig).sum()
    assert n_sel > 14000
    # ~15k selections: 4 standard deviations of 0.8 is 0.013, of 0.1 is 0.01.
    assert abs(n_mask / n_sel - 0.8) < 0.013
    assert abs(n_random / n_sel - 0.1) < 0.01
    assert abs(n_keep / n_sel - 0.1) < 0.01


def test_mlm_t5_bert_style_90_10():
    vocab = 1000
    n_sel = n_mask = 0
    for seed, x in enumerate(_mlm_corpus(n_examples=60, vocab=vocab)):
        out = O.mlm(
            x,
            seed=seed,
            vocab_size=vocab,
            mask_id=MASK_ID,
            special_ids=SPECIALS,
            mask_token_fraction=0.9,
            random_token_fraction=0.0,
        )
        w = out["encoder_loss_weights"].astype(bool)
        sel_in = out["encoder_input_tokens"][w]
        # No random replacements: a selected token is either the mask id or itself.
        assert np.all((sel_in == MASK_ID) | (sel_in == x[w]))
        n_sel += w.sum()
        n_mask += (sel_in == MASK_ID).sum()
    assert abs(n_mask / n_sel - 0.9) < 0.02


def test_mlm_random_tokens_uniform_over_non_special_ids():
    vocab = 12
    non_special = np.array([i for i in range(vocab) if i not in SPECIALS + (MASK_ID,)])
    counts = np.zeros(vocab, int)
    x = np.resize(non_special, 200).astype(np.int32)
    for seed in range(60):
        out = O.mlm(
            x,
            seed=seed,
            vocab_size=vocab,
            mask_id=MASK_ID,
            special_ids=SPECIALS,
            mask_token_fraction=0.0,
            random_token_fraction=1.0,
        )
        w = out["encoder_loss_weights"].astype(bool)
        counts += np.bincount(out["encoder_input_tokens"][w], minlength=vocab)
    assert counts[list(SPECIALS) + [MASK_ID]].sum() == 0
    uniform = np.full(non_special.size, 1 / non_special.size)
    assert chi2_gof(counts[non_special], uniform) > 1e-3


def test_mlm_whole_word_masking_selects_whole_words():
    rng = np.random.default_rng(1)
    total_sel = total_budget = 0
    for seed in range(50):
        word_lengths = rng.integers(1, 5, size=150)
        starts = np.concatenate([np.r_[True, np.zeros(n - 1, bool)] for n in word_lengths])
        word_id = np.cumsum(starts) - 1
        x = rng.integers(8, 1000, size=starts.size).astype(np.int32)
        # Some one-token words are special tokens (e.g. unk): never selected.
        special_words = np.flatnonzero((word_lengths == 1) & (rng.random(150) < 0.2))
        x[np.isin(word_id, special_words)] = 2
        out = O.mlm(
            x, seed=seed, vocab_size=1000, mask_id=MASK_ID, special_ids=SPECIALS,
            whole_word_starts=starts,
        )
        w = out["encoder_loss_weights"].astype(bool)
        assert not np.any(w[x == 2])
        budget = round(0.15 * (x != 2).sum())
        assert 0 < w.sum() <= budget
        # Every word is either entirely selected or not at all.
        per_word = np.bincount(word_id, weights=w, minlength=150)
        assert np.all((per_word == 0) | (per_word == word_lengths))
        total_sel += w.sum()
        total_budget += budget
    assert total_sel >= 0.95 * total_budget


def test_mlm_whole_word_fallback_and_token_mode_counts_differ():
    # A single long word longer than the budget is still taken whole (never zero predictions).
    x = np.arange(10, 30, dtype=np.int32)
    starts = np.zeros(20, bool)
    starts[0] = True
    out = O.mlm(x, seed=0, vocab_size=100, mask_id=MASK_ID, whole_word_starts=starts)
    assert out["encoder_loss_weights"].sum() == 20
    out = O.mlm(x, seed=0, vocab_size=100, mask_id=MASK_ID)
    assert out["encoder_loss_weights"].sum() == 3


def test_mlm_deterministic_and_seed_sensitive():
    x = np.arange(10, 500, dtype=np.int32)
    kw = dict(vocab_size=1000, mask_id=MASK_ID)
    a, b, c = O.mlm(x, seed=3, **kw), O.mlm(x, seed=3, **kw), O.mlm(x, seed=4, **kw)
    np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])
    assert not np.array_equal(a["encoder_loss_weights"], c["encoder_loss_weights"])


# ----------------------------------------------------------------------------------------------
# Prefix LM


def test_prefix_lm_t5x_golden_example():
    # seqio PrefixLMFeatureConverter docstring: inputs [9, 4, 6, 1], targets [3, 9, 1].
    tokens = np.array([9, 4, 6, 1, 3, 9, 1], np.int32)
    split = lambda s: np.argmax(O.prefix_lm(tokens, seed=s)["decoder_loss_weights"])  # noqa: E731
    seed = next(s for s in range(1000) if split(s) == 4)
    out = O.prefix_lm(tokens, seed=seed)
    np.testing.assert_array_equal(out["decoder_target_tokens"], [9, 4, 6, 1, 3, 9, 1])
    np.testing.assert_array_equal(out["decoder_input_tokens"], [0, 9, 4, 6, 1, 3, 9])
    np.testing.assert_array_equal(out["decoder_loss_weights"], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(out["decoder_causal_attention"], [1, 1, 1, 1, 1, 0, 0])


def test_prefix_lm_split_uniform_and_loss_on_targets_only():
    length = 20
    tokens = np.arange(10, 10 + length, dtype=np.int32)
    pos = np.arange(length)
    splits = []
    for seed in range(3000):
        out = O.prefix_lm(tokens, seed=seed)
        w = out["decoder_loss_weights"]
        s = int(np.argmax(w))
        np.testing.assert_array_equal(w, pos >= s)
        np.testing.assert_array_equal(out["decoder_causal_attention"], pos <= s)
        np.testing.assert_array_equal(out["decoder_target_tokens"], tokens)
        splits.append(s)
    counts = np.bincount(splits, minlength=length)
    assert counts[0] == 0  # the prefix is never empty and never the whole sequence
    uniform = np.full(length - 1, 1 / (length - 1))
    assert chi2_gof(counts[1:], uniform) > 1e-3
    # Power check: a split skewed to the middle would be rejected.
    tri = np.minimum(np.arange(1, length), np.arange(length - 1, 0, -1)).astype(float)
    assert chi2_gof(counts[1:], tri / tri.sum()) < 1e-6


def test_prefix_lm_encoder_decoder():
    tokens = np.arange(10, 60, dtype=np.int32)
    for seed in range(20):
        out = O.prefix_lm_encoder_decoder(tokens, seed=seed)
        enc, tgt = out["encoder_input_tokens"], out["decoder_target_tokens"]
        assert enc[-1] == EOS and tgt[-1] == EOS
        assert enc.size >= 2 and tgt.size >= 2
        np.testing.assert_array_equal(np.r_[enc[:-1], tgt[:-1]], tokens)
        np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, tgt[:-1]])
        np.testing.assert_array_equal(out["decoder_loss_weights"], np.ones(tgt.size))
        # Same split as the decoder-only form for the same seed.
        s = int(np.argmax(O.prefix_lm(tokens, seed=seed)["decoder_loss_weights"]))
        assert enc.size - 1 == s


# ----------------------------------------------------------------------------------------------
# UL2


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
            k = _sentinels(enc[1:]).size
            np.testing.assert_array_equal(_sentinels(enc[1:]), VOCAB - 1 - np.arange(k))
            np.testing.assert_array_equal(
                _sentinels(out["decoder_target_tokens"]), VOCAB - 1 - np.arange(k)
            )
            assert out["decoder_target_tokens"].size - 1 - k == round(300 * d.noise_density)
            assert reconstruct(enc[1:], out["decoder_target_tokens"], VOCAB) == tokens.tolist()
        else:
            ref = O.prefix_lm_encoder_decoder(tokens, seed=seed)
        np.testing.assert_array_equal(enc[1:], ref["encoder_input_tokens"])
        for key in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"):
            np.testing.assert_array_equal(out[key], ref[key])
    assert seen == set(range(7))


def test_mlm_encoder_decoder_is_mlm_inputs_and_the_whole_text_as_targets():
    tokens = np.arange(10, 210, dtype=np.int32)
    kw = {"vocab_size": 1000, "mask_id": MASK_ID, "special_ids": SPECIALS}
    out = O.mlm_encoder_decoder(tokens, seed=3, **kw)
    np.testing.assert_array_equal(out["encoder_input_tokens"],
                                  np.r_[O.mlm(tokens, seed=3, **kw)["encoder_input_tokens"], EOS])
    np.testing.assert_array_equal(out["decoder_target_tokens"], np.r_[tokens, EOS])
    np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, tokens])
    assert out["decoder_loss_weights"].sum() == tokens.size + 1


# ----------------------------------------------------------------------------------------------
# Registry, tf.data form, validation

_KWARGS = {
    "clm": {},
    "mlm": {"vocab_size": 1000, "mask_id": MASK_ID, "special_ids": SPECIALS},
    "span_corruption": {"vocab_size": VOCAB, "noise_density": 0.15, "mean_noise_span_length": 3.0},
    "prefix_lm": {},
    "prefix_lm_encoder_decoder": {},
    "mlm_encoder_decoder": {"vocab_size": 1000, "mask_id": MASK_ID, "special_ids": SPECIALS},
    "ul2": {"vocab_size": VOCAB, "mode_ids": MODE_IDS},
}


def test_registry_names_and_binding():
    assert O.OBJECTIVES == ("clm", "mlm", "span_corruption", "prefix_lm", "ul2")
    tokens = np.arange(10, 80, dtype=np.int32)
    for name, kw in _KWARGS.items():
        fn = O.get_objective(name, **kw)
        out = fn(tokens, 5)
        assert tuple(sorted(out)) == tuple(sorted(O.OUTPUT_KEYS[name]))
        assert all(v.dtype == np.int32 and v.ndim == 1 for v in out.values())
    ref = O.span_corruption(tokens, seed=5, **_KWARGS["span_corruption"])
    got = O.get_objective("span_corruption", **_KWARGS["span_corruption"])(tokens, 5)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


def test_tf_map_matches_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 900, size=(4, 64)).astype(np.int32)
    seeds = np.array([0, 17, -3, 2**40], np.int64)
    ds = tf.data.Dataset.from_tensor_slices((tokens, seeds))
    for name, kw in _KWARGS.items():
        mapped = ds.map(O.tf_objective_fn(name, None, **kw))
        assert all(spec.shape.as_list() == [None] for spec in mapped.element_spec.values())
        fn = O.get_objective(name, **kw)
        n = 0
        for (x, seed), got in zip(zip(tokens, seeds), mapped.as_numpy_iterator()):
            want = fn(x, int(seed))
            assert set(got) == set(want)
            for k in want:
                assert got[k].dtype == np.int32
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name}/{k}")
            n += 1
        assert n == 4
    # A subset of keys is honoured; unknown keys fail eagerly.
    sub = ds.map(O.tf_objective_fn("clm", ["decoder_target_tokens"]))
    assert list(sub.element_spec) == ["decoder_target_tokens"]
    with pytest.raises(ValueError, match="output_keys"):
        O.tf_objective_fn("clm", ["encoder_input_tokens"])


_X = np.arange(10, 50, dtype=np.int32)


def _sc(**kw):
    return O.span_corruption(_X, seed=0, **{"vocab_size": VOCAB, **kw})


def _mlm(**kw):
    return O.mlm(_X, seed=0, **{"vocab_size": 100, "mask_id": 3, **kw})


def _ul2(**kw):
    return O.ul2(_X, seed=0, **{"vocab_size": VOCAB, "mode_ids": MODE_IDS, **kw})


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: _sc(noise_density=0.0), "noise_density"),
        (lambda: _sc(noise_density=1.0), "noise_density"),
        (lambda: _sc(noise_density=1.5), "noise_density"),
        (lambda: _sc(mean_noise_span_length=0), "mean_noise_span_length"),
        (lambda: _sc(mean_noise_span_length=-2.0), "mean_noise_span_length"),
        (lambda: _sc(vocab_size=90), "vocab_size"),
        (lambda: O.span_corruption_lengths(512, noise_density=1.2), "noise_density"),
        (lambda: O.span_corruption_lengths(512, mean_noise_span_length=0.0), "mean_noise_span_length"),
        (lambda: _mlm(mask_rate=0.0), "mask_rate"),
        (lambda: _mlm(mask_rate=1.0), "mask_rate"),
        (lambda: _mlm(mask_token_fraction=0.95), "random_token_fraction"),
        (lambda: _mlm(mask_id=300), "mask_id"),
        (lambda: _mlm(vocab_size=4, special_ids=(0, 1, 2)), "vocab_size"),
        (lambda: _mlm(whole_word_starts=np.ones(3, bool)), "whole_word_starts"),
        (lambda: O.clm(np.zeros((2, 3), np.int32)), "tokens"),
        (lambda: _ul2(vocab_size=104), "vocab_size"),
        (lambda: _ul2(mode_ids={"nlu": 4, "s2s": 5}), "mode_ids"),
        (lambda: _ul2(mode_ids={**MODE_IDS, "nlg": VOCAB - 1}), "mode_ids"),
        (lambda: _ul2(denoisers=()), "denoisers"),
        (lambda: O.Denoiser("span", 0.0, 0.15, "nlu"), "mean_span"),
        (lambda: O.Denoiser("span", 3.0, 1.0, "nlu"), "noise_density"),
        (lambda: O.Denoiser("prefix", None, 0.25, "s2s"), "noise_density"),
        (lambda: O.Denoiser("span", 3.0, 0.15, "xyz"), "mode"),
        (lambda: O.get_objective("span_corruption", vocab_size=VOCAB, noise_density=2.0), "noise_density"),
        (lambda: O.get_objective("mlm", vocab_size=VOCAB, mask_id=3, mask_rate=1.5), "mask_rate"),
        (lambda: O.get_objective("mlm", mask_id=3), "vocab_size"),
        (lambda: O.get_objective("ul2", vocab_size=50, mode_ids=MODE_IDS), "vocab_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_unknown_objective_names_valid_ones():
    with pytest.raises(ValueError) as e:
        O.get_objective("electra")
    msg = str(e.value)
    assert "electra" in msg
    assert all(name in msg for name in O.OBJECTIVES)
