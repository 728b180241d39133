"""Tests for jaxlm.objectives.masking: BERT's rates, whole words, T5's BERT-style form."""

import numpy as np

from jaxlm import objectives as O

from ._util import EOS, MASK_ID, SPECIALS, chi2_gof


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


def test_mlm_encoder_decoder_is_mlm_inputs_and_the_whole_text_as_targets():
    tokens = np.arange(10, 210, dtype=np.int32)
    kw = {"vocab_size": 1000, "mask_id": MASK_ID, "special_ids": SPECIALS}
    out = O.mlm_encoder_decoder(tokens, seed=3, **kw)
    np.testing.assert_array_equal(out["encoder_input_tokens"],
                                  np.r_[O.mlm(tokens, seed=3, **kw)["encoder_input_tokens"], EOS])
    np.testing.assert_array_equal(out["decoder_target_tokens"], np.r_[tokens, EOS])
    np.testing.assert_array_equal(out["decoder_input_tokens"], np.r_[0, tokens])
    assert out["decoder_loss_weights"].sum() == tokens.size + 1
