"""Zero-shot minimal pairs: the builder (one swap or one replacement, balance, determinism) and
each family's scorer against a brute-force likelihood from the model's logits, toy models that
prefer the original, and ties."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.data.tasks import encode_texts
from jaxlm.data.tokenizer import ByteVocabulary
from jaxlm.evaluation.pairs import (MinimalPairs, build_minimal_pairs, infilling_examples,
                                    pair_accuracy, score_decoder, score_encoder,
                                    score_encoder_decoder, score_pairs)

from ..models._util import make, tiny

VOCAB = ByteVocabulary()
TEXTS = [
    "The quick brown fox jumps over the lazy dog. A second sentence follows here!",
    "Short one. Every module has a docstring that explains what the module does.",
    "Return the value of the named attribute of the object. Raise an error if it is missing?",
    "The loop runs until the queue is empty and then it stops. Call close when done.",
    "Read the file and write a copy of it to the path given by the caller of this function.",
]


def _log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# The builder


def test_each_pair_differs_by_one_swap_or_one_replacement():
    pairs = build_minimal_pairs(TEXTS, VOCAB, count=8, seed=0, seq_len=96)
    assert len(pairs) == 8 and pairs.kinds.count("swap") == 4 and pairs.kinds.count("replace") == 4
    vocabulary = {w for t in TEXTS for w in t.split()}
    for orig, alt, kind, i in zip(pairs.original, pairs.altered, pairs.kinds, pairs.positions):
        a, b = orig.split(), alt.split()
        assert len(a) == len(b) and a != b
        differ = [j for j in range(len(a)) if a[j] != b[j]]
        if kind == "swap":
            assert differ == [i, i + 1] and (a[i], a[i + 1]) == (b[i + 1], b[i])
        else:
            assert differ == [i] and len(b[i]) == len(a[i]) and b[i] in vocabulary
            assert b[i].isalpha()
        assert orig in " ".join(" ".join(t.split()) for t in TEXTS)  # a sentence of the texts
    assert len(set(pairs.original)) == 8  # each sentence at most once
    np.testing.assert_array_equal(
        pairs.original_tokens, encode_texts(VOCAB, [(t,) for t in pairs.original], 96)[0])
    np.testing.assert_array_equal(
        pairs.altered_tokens, encode_texts(VOCAB, [(t,) for t in pairs.altered], 96)[0])


def test_builder_is_deterministic_and_checks_its_supply():
    a = build_minimal_pairs(TEXTS, VOCAB, count=6, seed=3, seq_len=96)
    b = build_minimal_pairs(TEXTS, VOCAB, count=6, seed=3, seq_len=96)
    assert a.original == b.original and a.altered == b.altered
    np.testing.assert_array_equal(a.altered_tokens, b.altered_tokens)
    c = build_minimal_pairs(TEXTS, VOCAB, count=6, seed=4, seq_len=96)
    assert (c.original, c.altered) != (a.original, a.altered)
    with pytest.raises(ValueError, match="needs more text"):
        build_minimal_pairs(TEXTS, VOCAB, count=50, seq_len=96)
    # Sentences longer than seq_len - 1 tokens are skipped, not truncated.
    short = build_minimal_pairs(TEXTS, VOCAB, count=2, seq_len=40)
    assert all(len(s) <= 39 for s in short.original + short.altered)


def test_pair_accuracy_counts_ties_as_half():
    np.testing.assert_array_equal(pair_accuracy([-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0]),
                                  [1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="two"):
        pair_accuracy([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------------------------------
# Scorers against brute force


def _rows(lengths, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), 8), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n - 1] = rng.integers(3, 200, n - 1)
        tokens[i, n - 1] = 1
    return tokens


def test_decoder_scores_are_sequence_log_likelihoods():
    model, params = make(tiny("decoder", num_layers=1))
    tokens = _rows([3, 8, 5, 2, 6])
    scores = score_decoder(model, params, tokens, batch_size=2)
    for i, row in enumerate(tokens):
        row = row[row > 0]
        inputs = np.concatenate([[0], row[:-1]])[None]
        logp = _log_softmax(model.apply({"params": params}, {"decoder_input_tokens": inputs})[0])
        assert scores[i] == pytest.approx(logp[np.arange(len(row)), row].sum(), rel=1e-5)


def test_encoder_scores_are_pseudo_log_likelihoods():
    model, params = make(tiny("encoder", num_layers=1))
    tokens = _rows([4, 6, 3])
    tokens[1, 2] = 2  # UNK: special, never masked
    scores = score_encoder(model, params, tokens, VOCAB.mask_id, batch_size=5)
    for i, row in enumerate(tokens):
        row = row[row > 0]
        total = 0.0
        for j in np.flatnonzero(row > 2):
            masked = row.copy()
            masked[j] = VOCAB.mask_id
            logits = model.apply({"params": params}, {"encoder_input_tokens": masked[None]})
            total += _log_softmax(logits[0, j])[row[j]]
        assert scores[i] == pytest.approx(total, rel=1e-5)


def test_infilling_examples_share_the_context():
    s = VOCAB.sentinel_id(0)
    original = np.array([[10, 11, 12, 13, 1, 0], [20, 21, 22, 1, 0, 0]])
    altered = np.array([[10, 12, 11, 13, 1, 0], [20, 25, 22, 1, 0, 0]])
    inputs, ta, tb = infilling_examples(original, altered, s, prefix_ids=(4,))
    np.testing.assert_array_equal(inputs, [[4, 10, s, 13, 1], [4, 20, s, 22, 1]])
    np.testing.assert_array_equal(ta, [[s, 11, 12, 1], [s, 21, 1, 0]])
    np.testing.assert_array_equal(tb, [[s, 12, 11, 1], [s, 25, 1, 0]])


def test_encoder_decoder_scores_are_infilling_log_likelihoods():
    model, params = make(tiny("encoder_decoder", num_layers=1))
    s = VOCAB.sentinel_id(0)
    original = np.array([[10, 11, 12, 13, 1, 0], [20, 21, 22, 1, 0, 0], [30, 31, 32, 33, 34, 1]])
    altered = np.array([[10, 12, 11, 13, 1, 0], [20, 25, 22, 1, 0, 0], [30, 32, 31, 33, 34, 1]])
    sa, sb = score_encoder_decoder(model, params, original, altered, s, batch_size=2)
    for i in range(3):
        a, b = original[i][original[i] > 0], altered[i][altered[i] > 0]
        p = next(j for j in range(len(a)) if a[j] != b[j])
        q = next(j for j in range(len(a)) if a[-1 - j] != b[-1 - j])
        context = np.concatenate([a[:p], [s], a[len(a) - q:]])[None]
        for side, got in ((a, sa[i]), (b, sb[i])):
            target = np.concatenate([[s], side[p:len(side) - q], [1]])
            batch = {"encoder_input_tokens": context,
                     "decoder_input_tokens": np.concatenate([[0], target[:-1]])[None]}
            logp = _log_softmax(model.apply({"params": params}, batch)[0])
            assert got == pytest.approx(logp[np.arange(len(target)), target].sum(), rel=1e-5)


# --------------------------------------------------------------------------------------------------
# Toy models: a bigram table that knows the original order; a uniform one (ties)


class Bigram:
    """logits[t] = 10 * onehot(next_of[x_t]) with x_t the previous token of the scored stream
    (the decoder input, or the encoder token to the left of t); zeros if next_of is None."""

    def __init__(self, next_of: dict[int, int] | None, stream: str):
        table = np.zeros((VOCAB.vocab_size, VOCAB.vocab_size), np.float32)
        for a, b in (next_of or {}).items():
            table[a, b] = 10.0
        self.table, self.stream = jnp.asarray(table), stream

    def apply(self, variables, batch, **kwargs):
        if self.stream == "encoder":
            x = batch["encoder_input_tokens"]
            x = jnp.pad(x[:, :-1], ((0, 0), (1, 0)))  # the left neighbour (pad at the start)
        else:
            x = batch["decoder_input_tokens"]
        return self.table[x]


def _toy_pairs():
    original = np.array([[5, 6, 7, 8, 1, 0], [5, 6, 7, 8, 1, 0]], np.int32)
    altered = np.array([[5, 7, 6, 8, 1, 0], [5, 6, 9, 8, 1, 0]], np.int32)
    return MinimalPairs(("a", "b"), ("c", "d"), ("swap", "replace"), (1, 2), original, altered)


@pytest.mark.parametrize("family", ["decoder", "encoder", "encoder_decoder"])
def test_a_model_that_prefers_the_original_scores_one(family):
    s = VOCAB.sentinel_id(0)
    chain = {s: 6, 6: 7, 7: 1} if family == "encoder_decoder" else {0: 5, 5: 6, 6: 7, 7: 8, 8: 1}
    model = Bigram(chain, "encoder" if family == "encoder" else "decoder")
    pairs = _toy_pairs()
    orig, alt = score_pairs(model, {}, family, pairs, VOCAB, batch_size=4)
    np.testing.assert_array_equal(pair_accuracy(orig, alt), [1.0, 1.0])
    uniform = Bigram(None, "encoder" if family == "encoder" else "decoder")
    orig, alt = score_pairs(uniform, {}, family, pairs, VOCAB, batch_size=4)
    np.testing.assert_array_equal(pair_accuracy(orig, alt), [0.5, 0.5])


def test_score_pairs_on_built_pairs_and_unknown_family():
    model, params = make(tiny("decoder", num_layers=1))
    pairs = build_minimal_pairs(TEXTS, VOCAB, count=4, seq_len=96)
    orig, alt = score_pairs(model, params, "decoder", pairs, VOCAB, batch_size=3)
    both = score_decoder(model, params, np.concatenate([pairs.original_tokens,
                                                        pairs.altered_tokens]), batch_size=8)
    np.testing.assert_allclose(np.concatenate([orig, alt]), both, rtol=1e-5)
    assert np.all(np.isfinite(orig)) and np.all(orig < 0)
    with pytest.raises(ValueError, match="family"):
        score_pairs(model, params, "rnn", pairs, VOCAB)
