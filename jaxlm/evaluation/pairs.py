"""Zero-shot minimal pairs: does a model score a held-out sentence above a slightly broken copy?

    pairs = build_minimal_pairs(heldout_texts, vocab, count=2000, seed=0, seq_len=128)
    orig, alt = score_pairs(model, params, cfg.family, pairs, vocab)
    correct = pair_accuracy(orig, alt)   # [pairs] in {0, 0.5, 1}; stats.bootstrap_ci(correct)

Pairs (`build_minimal_pairs`): sentences are cut from the texts at `.`, `!` or `?` followed by
whitespace, their words (whitespace-separated) re-joined by single spaces; a sentence of fewer than
`min_words` or more than `max_words` words, or longer than seq_len - 1 tokens, is skipped, and each
sentence is used at most once. Half of the pairs swap two adjacent, different words; the other
half replace one word by a different word of the texts' vocabulary with the same number of
characters, drawn in proportion to its frequency in the texts. Only purely alphabetic words are
swapped, replaced or drawn (`str.isalpha`), so punctuation and code-like tokens never move, which
would make the altered side trivially odd. The length match matters: a likelihood sums over
tokens, so a longer replacement would lose for its length alone (with the byte vocabulary both
sides have exactly the same number of tokens; with SentencePiece nearly so). Pairs are a
pure function of (texts, vocab, count, seed, lengths).

Scores (higher = more likely), one scorer per family, run jitted and batched:
  * decoder (`score_decoder`): the sequence log-likelihood sum_t log p(x_t | x_<t) of the tokens
    and their EOS, read from the text shifted right with pad as BOS (the CLM pretraining input).
  * encoder (`score_encoder`): the masked pseudo-log-likelihood (Salazar et al. 2020): each
    non-special position in turn is replaced by the vocabulary's mask id and log p(original token)
    is summed. It costs one forward pass per token.
  * encoder_decoder (`score_encoder_decoder`): span infilling. The two sentences of a pair share a
    token prefix and suffix; the region between them (where they differ) is replaced in the
    encoder input by `<extra_id_0>`, which gives both sentences the SAME input
    `prefix <extra_id_0> suffix EOS`, and each sentence is scored by the decoder's log-likelihood
    of its own target `<extra_id_0> region EOS`: the span-corruption format, so the comparison is
    p(region_a | context) against p(region_b | context). `prefix_ids` (e.g. UL2's [NLU] mode
    token) are prepended to the encoder input as in pretraining. This score needs the pair (it is
    not a per-sentence likelihood), so the scorer takes both sides.
A prefix-LM decoder is scored like a causal LM (an empty prefix), which its pretraining includes.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.data.tasks import encode_texts
from jaxlm.data.tokenizer import EOS_ID, PAD_ID, UNK_ID, Vocabulary
from jaxlm.finetune import classifier_batch

KINDS = ("swap", "replace")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclasses.dataclass(frozen=True)
class MinimalPairs:
    """Original / altered sentences, how each was altered, and both sides' tokens [P, seq_len]
    (ids, EOS, pad 0; the same length for both sides)."""

    original: tuple[str, ...]
    altered: tuple[str, ...]
    kinds: tuple[str, ...]  # 'swap' (words i, i+1) or 'replace' (word i)
    positions: tuple[int, ...]  # the word index i
    original_tokens: np.ndarray
    altered_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.original)


def sentences(texts: Iterable[str], min_words: int, max_words: int) -> list[list[str]]:
    """Distinct sentences of `texts` as word lists, in order of first appearance."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for text in texts:
        for sentence in _SENTENCE_END.split(text):
            words = tuple(sentence.split())
            if min_words <= len(words) <= max_words and words not in seen:
                seen.add(words)
                out.append(list(words))
    return out


def _swap(words: list[str], rng: np.random.Generator) -> tuple[list[str], int] | None:
    options = [i for i in range(len(words) - 1)
               if words[i] != words[i + 1] and words[i].isalpha() and words[i + 1].isalpha()]
    if not options:
        return None
    i = int(rng.choice(options))
    altered = list(words)
    altered[i], altered[i + 1] = altered[i + 1], altered[i]
    return altered, i


def _replace(words: list[str], rng: np.random.Generator,
             by_length: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[list[str], int] | None:
    options = [i for i, w in enumerate(words) if w.isalpha() and len(by_length[len(w)][0]) > 1]
    if not options:
        return None
    i = int(rng.choice(options))
    candidates, counts = by_length[len(words[i])]
    weights = np.where(candidates == words[i], 0.0, counts)
    altered = list(words)
    altered[i] = str(rng.choice(candidates, p=weights / weights.sum()))
    return altered, i


def build_minimal_pairs(texts: Sequence[str], vocab: Vocabulary, count: int, seed: int = 0, *,
                        seq_len: int = 128, min_words: int = 4,
                        max_words: int = 40) -> MinimalPairs:
    """`count` minimal pairs from the sentences of `texts` (see the module docstring):
    ceil(count / 2) adjacent swaps and floor(count / 2) replacements, alternating. Raises if the
    texts hold too few usable sentences."""
    if count < 1:
        raise ValueError(f"count={count} must be >= 1.")
    if min_words < 2:
        raise ValueError(f"min_words={min_words} must be >= 2 (a swap needs two words).")
    candidates = sentences(texts, min_words, max_words)
    frequency = collections.Counter(w for words in candidates for w in words if w.isalpha())
    grouped: dict[int, list[str]] = collections.defaultdict(list)
    for word in sorted(frequency):  # sorted: independent of dict and set order
        grouped[len(word)].append(word)
    by_length = {n: (np.array(ws), np.array([frequency[w] for w in ws], np.float64))
                 for n, ws in grouped.items()}

    rng = np.random.default_rng([seed, 0xFA125])
    need = {"swap": (count + 1) // 2, "replace": count // 2}
    made: list[tuple[str, str, str, int]] = []
    for index in rng.permutation(len(candidates)):
        if len(made) == count:
            break
        words = candidates[index]
        original = " ".join(words)
        if len(vocab.encode(original)) + 1 > seq_len:
            continue
        # Alternate the kinds; fall back to the other one when this sentence cannot take it.
        order = sorted((k for k in KINDS if need[k]), key=lambda k: -need[k])
        for kind in order:
            result = _swap(words, rng) if kind == "swap" else _replace(words, rng, by_length)
            if result is None:
                continue
            altered = " ".join(result[0])
            if len(vocab.encode(altered)) + 1 > seq_len:
                continue
            made.append((original, altered, kind, result[1]))
            need[kind] -= 1
            break
    if len(made) < count:
        raise ValueError(f"Only {len(made)} minimal pairs from {len(candidates)} sentences of "
                         f"{min_words}-{max_words} words; count={count} needs more text.")
    originals, altered, kinds, positions = (tuple(x) for x in zip(*made))
    original_tokens, _ = encode_texts(vocab, [(t,) for t in originals], seq_len)
    altered_tokens, _ = encode_texts(vocab, [(t,) for t in altered], seq_len)
    return MinimalPairs(originals, altered, kinds, positions, original_tokens, altered_tokens)


# --------------------------------------------------------------------------------------------------
# Scorers


def pair_accuracy(score_original: np.ndarray, score_altered: np.ndarray) -> np.ndarray:
    """[pairs] float64: 1 where the original scores higher, 0.5 on a tie, 0 otherwise."""
    a = np.asarray(score_original, np.float64)
    b = np.asarray(score_altered, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"Scores must be two [pairs] arrays; got {a.shape} and {b.shape}.")
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def _token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(targets) [B, L] under float32 logits [B, L, V]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def _target_loglik(model: Any) -> Any:
    """jitted (params, batch) -> [B] sum of log p(decoder_target_tokens) over non-pad targets."""

    @jax.jit
    def score(params: Any, batch: dict[str, jax.Array]) -> jax.Array:
        targets = batch["decoder_target_tokens"]
        lp = _token_logprobs(model.apply({"params": params}, batch), targets)
        return jnp.where(targets > 0, lp, 0.0).sum(1)

    return score


def _batched(rows: int, batch_size: int) -> Iterable[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    for start in range(0, rows, batch_size):
        yield start, min(start + batch_size, rows)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """x with all-zero rows appended up to `rows` (one compiled shape for every batch)."""
    return np.pad(x, ((0, rows - len(x)),) + ((0, 0),) * (x.ndim - 1))


def score_decoder(model: Any, params: Any, tokens: np.ndarray,
                  batch_size: int = 64) -> np.ndarray:
    """[N] float64 log-likelihoods of EOS-terminated, 0-padded rows [N, L] under a decoder."""
    tokens = np.asarray(tokens, np.int32)
    score = _target_loglik(model)
    out = np.zeros(len(tokens))
    for start, stop in _batched(len(tokens), batch_size):
        batch = classifier_batch("decoder", _pad_rows(tokens[start:stop], batch_size))
        out[start:stop] = np.asarray(score(params, batch))[:stop - start]
    return out


def score_encoder(model: Any, params: Any, tokens: np.ndarray, mask_id: int,
                  batch_size: int = 64,
                  special_ids: Sequence[int] = (PAD_ID, EOS_ID, UNK_ID),
                  scored: np.ndarray | None = None) -> np.ndarray:
    """[N] float64 masked pseudo-log-likelihoods: for every position whose token is not special
    (MLM pretraining never masks those), log p(token) with that position alone set to mask_id.
    `scored` ([N, L] bool) restricts the sum to those positions (e.g. where a pair differs).
    Each batch holds `batch_size` (row, position) maskings."""
    tokens = np.asarray(tokens, np.int32)
    keep = ~np.isin(tokens, np.asarray(special_ids))
    rows, positions = np.nonzero(keep if scored is None else keep & np.asarray(scored, bool))

    @jax.jit
    def score(params: Any, tokens_BxL: jax.Array, pos_B: jax.Array) -> jax.Array:
        b = jnp.arange(tokens_BxL.shape[0])
        masked = tokens_BxL.at[b, pos_B].set(mask_id)
        logits = model.apply({"params": params}, {"encoder_input_tokens": masked})
        return _token_logprobs(logits[b, pos_B][:, None], tokens_BxL[b, pos_B][:, None])[:, 0]

    out = np.zeros(len(tokens))
    for start, stop in _batched(len(rows), batch_size):
        r, p = rows[start:stop], positions[start:stop]
        lp = score(params, _pad_rows(tokens[r], batch_size), _pad_rows(p, batch_size))
        np.add.at(out, r, np.asarray(lp, np.float64)[:stop - start])
    return out


def infilling_examples(original_tokens: np.ndarray, altered_tokens: np.ndarray,
                       sentinel_id: int, prefix_ids: Sequence[int] = ()
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(encoder inputs [P, E], original targets [P, T], altered targets [P, T]), 0-padded: the
    differing region of each pair replaced by `sentinel_id` in the shared input, and each side's
    target `sentinel region EOS` (see the module docstring)."""
    a_all, b_all = np.asarray(original_tokens), np.asarray(altered_tokens)
    if a_all.shape != b_all.shape or a_all.ndim != 2:
        raise ValueError(f"Token arrays must both be [P, L]; got {a_all.shape}, {b_all.shape}.")
    inputs, targets_a, targets_b = [], [], []
    for a, b in zip(a_all, b_all):
        a, b = a[a != PAD_ID], b[b != PAD_ID]
        shortest = min(len(a), len(b))
        prefix = next((i for i in range(shortest) if a[i] != b[i]), shortest)
        suffix = next((i for i in range(shortest - prefix) if a[-1 - i] != b[-1 - i]),
                      shortest - prefix)
        inputs.append([*prefix_ids, *a[:prefix], sentinel_id, *a[len(a) - suffix:]])
        if inputs[-1][-1] != EOS_ID:  # rows end with EOS; a pair that does not keeps the format
            inputs[-1].append(EOS_ID)
        targets_a.append([sentinel_id, *a[prefix:len(a) - suffix], EOS_ID])
        targets_b.append([sentinel_id, *b[prefix:len(b) - suffix], EOS_ID])

    def stack(rows: list[list[int]], width: int) -> np.ndarray:
        out = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            out[i, :len(r)] = r
        return out

    width = max(len(t) for t in targets_a + targets_b)
    return (stack(inputs, max(len(r) for r in inputs)), stack(targets_a, width),
            stack(targets_b, width))


def score_encoder_decoder(model: Any, params: Any, original_tokens: np.ndarray,
                          altered_tokens: np.ndarray, sentinel_id: int, batch_size: int = 64,
                          prefix_ids: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """([P], [P]) float64 span-infilling log-likelihoods of each pair's original and altered
    region given the shared context (see `infilling_examples`)."""
    inputs, targets_a, targets_b = infilling_examples(original_tokens, altered_tokens,
                                                      sentinel_id, prefix_ids)
    score = _target_loglik(model)
    scores = []
    for targets in (targets_a, targets_b):
        out = np.zeros(len(targets))
        for start, stop in _batched(len(targets), batch_size):
            dec = classifier_batch("decoder", _pad_rows(targets[start:stop], batch_size))
            batch = {"encoder_input_tokens": _pad_rows(inputs[start:stop], batch_size), **dec}
            out[start:stop] = np.asarray(score(params, batch))[:stop - start]
        scores.append(out)
    return scores[0], scores[1]


def score_pairs(model: Any, params: Any, family: str, pairs: MinimalPairs, vocab: Vocabulary,
                batch_size: int = 64, prefix_ids: Sequence[int] = ()
                ) -> tuple[np.ndarray, np.ndarray]:
    """(original scores, altered scores) [P] with the family's scorer; `prefix_ids` only for the
    encoder-decoder (e.g. `[vocab.mode_ids['nlu']]` for a UL2 model)."""
    if family == "encoder_decoder":
        return score_encoder_decoder(model, params, pairs.original_tokens, pairs.altered_tokens,
                                     vocab.sentinel_id(0), batch_size, prefix_ids)
    both = np.concatenate([pairs.original_tokens, pairs.altered_tokens])
    if family == "decoder":
        scores = score_decoder(model, params, both, batch_size)
    elif family == "encoder":
        scores = score_encoder(model, params, both, vocab.mask_id, batch_size)
    else:
        raise ValueError(f"Unknown model family {family!r}: expected decoder, encoder or "
                         "encoder_decoder.")
    return scores[:len(pairs)], scores[len(pairs):]
