"""Tests for jaxlm.objectives.bart: Poisson span lengths, the masked fraction, one mask per span
(zero-length spans included), sentence permutation, random replacements."""

import math
from itertools import permutations

import numpy as np

from jaxlm import objectives as O
from jaxlm.data.tokenizer import ByteVocabulary
from jaxlm.objectives.bart import boundary_vocab_kwargs, infill

from ._util import EOS, MASK_ID, chi2_gof

BYTE = ByteVocabulary()
RULE = boundary_vocab_kwargs(BYTE)
KW = dict(vocab_size=5000, mask_id=MASK_ID, **RULE)


def _spans_from_input(inputs: np.ndarray, n: int) -> list[int]:
    """Span lengths, left to right, read off the corrupted input of the text arange(10, 10 + n),
    checking that every run of missing tokens is exactly one mask and that a mask between two
    consecutive tokens (a zero-length span) is an inserted one."""
    assert inputs[-1] == EOS
    x = inputs[:-1]
    is_mask = x == MASK_ID
    kept = np.r_[9, x[~is_mask], 10 + n]
    assert np.all(np.diff(kept) >= 1), "kept tokens out of order"
    # Masks between each pair of consecutive kept tokens.
    between = np.bincount(np.cumsum(~is_mask)[is_mask], minlength=kept.size - 1)
    gaps = np.diff(kept) - 1
    assert np.all(between <= 1), "two masks for one span"
    assert np.all(gaps[between == 0] == 0), "missing tokens without a mask"
    return gaps[between == 1].tolist()


def _renewal(m: int, lam: float) -> float:
    """U(m) = sum_{i>=0} P(S_i <= m), S_i ~ Poisson(i * lam) a sum of i Poisson(lam) draws."""
    total, i = 0.0, 0
    while True:
        mu = i * lam
        cdf = sum(math.exp(-mu + k * math.log(mu) - math.lgamma(k + 1)) if mu else float(k == 0)
                  for k in range(m + 1))
        total += cdf
        if cdf < 1e-12:
            return total
        i += 1


def test_span_lengths_follow_poisson_3_and_every_span_is_one_mask():
    n, lam = 200, 3.0
    budget = round(0.3 * n)
    tokens = np.arange(10, 10 + n, dtype=np.int32)
    complete = []
    zero_spans = 0
    for seed in range(3000):
        out = O.bart(tokens, seed=seed, permute_sentences=False, **KW)
        lengths = _spans_from_input(out["encoder_input_tokens"], n)
        assert sum(lengths) == budget  # the masked count is exact
        zero_spans += lengths.count(0)
        complete += lengths[:-1]  # the last drawn (rightmost) span is cut to fit the budget
    assert zero_spans > 1000  # zero-length spans insert a mask (Poisson(3) gives 0 w.p. 5%)
    # Spans drawn before the budget is reached are Poisson draws whose running sum stays below
    # the budget: P(length j among them) is proportional to p(j) * U(budget - 1 - j).
    js = np.arange(budget)
    p = np.array([math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1)) for j in js])
    expected = p * np.array([_renewal(budget - 1 - j, lam) for j in js])
    counts = np.bincount(complete, minlength=budget)[:budget]
    assert len(complete) > 50_000
    assert chi2_gof(counts, expected / expected.sum()) > 1e-3
    # That stopping bias is small: the mean stays within 3% of Poisson(3)'s.
    bias_mean = float((js * expected).sum() / expected.sum())
    assert abs(bias_mean - lam) < 0.1 and abs(np.mean(complete) - bias_mean) < 0.03


def test_masked_fraction_is_thirty_percent():
    rng = np.random.default_rng(0)
    masked = total = 0
    for seed in range(2000):
        n = int(rng.integers(20, 300))
        spans = O.infilling_spans(n, seed=seed)
        assert spans[1].sum() == round(0.3 * n)
        # Spans never overlap and are kept apart by at least one token.
        ends = spans[0] + spans[1]
        assert np.all(spans[0][1:] >= ends[:-1] + 1) and (not ends.size or ends[-1] <= n)
        masked += spans[1].sum()
        total += n
    assert abs(masked / total - 0.3) < 0.01


def test_the_decoder_reconstructs_the_original_text():
    tokens = np.array(BYTE.encode("One two. Three four? Five\nSix."), np.int32)
    out = O.bart(tokens, seed=4, **KW)
    np.testing.assert_array_equal(out["decoder_target_tokens"], np.r_[tokens, EOS])
    np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, tokens])
    assert out["decoder_loss_weights"].sum() == tokens.size + 1
    # The encoder input is the permuted text infilled with the spans of the same seed.
    permuted = O.shuffle_sentences(tokens, seed=4, **RULE)
    starts, lengths = O.infilling_spans(tokens.size, seed=4)
    np.testing.assert_array_equal(out["encoder_input_tokens"],
                                  np.r_[infill(permuted, starts, lengths, MASK_ID), EOS])
    assert out["encoder_input_tokens"].size <= tokens.size + 1  # fits the pair lengths


def test_sentence_rule_of_the_byte_vocabulary():
    text = "A b. C d?\nE 3.14 f! G"
    x = np.array(BYTE.encode(text), np.int32)
    sentences = O.split_sentences(x, O.sentence_ends(x, **RULE))
    assert [BYTE.decode(s) for s in sentences] == ["A b. ", "C d?\n", "E 3.14 f! ", "G"]
    # EOS (a document boundary inside a concat chunk) ends a sentence too.
    y = np.r_[np.array(BYTE.encode("no end"), np.int32), EOS, np.array(BYTE.encode("x"))]
    assert len(O.split_sentences(y, O.sentence_ends(y, **RULE))) == 2


def test_permutation_keeps_the_multiset_of_sentences_and_is_uniform():
    x = np.array(BYTE.encode("Aa. Bb. Cc.\n"), np.int32)
    original = [tuple(s) for s in O.split_sentences(x, O.sentence_ends(x, **RULE))]
    assert len(original) == 3
    orders = {p: i for i, p in enumerate(permutations(range(3)))}
    counts = np.zeros(6, int)
    for seed in range(1200):
        y = O.shuffle_sentences(x, seed=seed, **RULE)
        got = [tuple(s) for s in O.split_sentences(y, O.sentence_ends(y, **RULE))]
        assert sorted(got) == sorted(original)
        counts[orders[tuple(original.index(s) for s in got)]] += 1
    assert chi2_gof(counts, np.full(6, 1 / 6)) > 1e-3


def test_random_ratio_replaces_that_fraction_of_masks_by_ordinary_tokens():
    tokens = np.arange(10, 210, dtype=np.int32)
    regular = set(BYTE.regular_ids)
    spans = randoms = 0
    for seed in range(300):
        out = O.bart(tokens, seed=seed, permute_sentences=False, random_ratio=0.4,
                     **O.objective_vocab_kwargs("bart", BYTE))
        x = out["encoder_input_tokens"][:-1]
        k = O.infilling_spans(tokens.size, seed=seed)[0].size
        n_mask = int((x == BYTE.mask_id).sum())
        assert x.size == tokens.size - round(0.3 * tokens.size) + k
        assert all(int(t) in regular or t == BYTE.mask_id for t in x)
        spans += k
        randoms += k - n_mask
    assert abs(randoms / spans - 0.4) < 0.03


def test_short_texts_and_determinism():
    for n in range(0, 12):
        x = np.arange(10, 10 + n, dtype=np.int32)
        out = O.bart(x, seed=n, **KW)
        assert out["encoder_input_tokens"].size <= n + 1
        assert out["decoder_target_tokens"].size == n + 1
    x = np.arange(10, 200, dtype=np.int32)
    a, b, c = (O.bart(x, seed=s, **KW)["encoder_input_tokens"] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
