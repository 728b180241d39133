"""BART (Lewis et al. 2020), its best setting: text infilling plus sentence permutation.

The encoder reads the text with its sentences shuffled and spans of it masked; the decoder
reconstructs the whole original text (teacher-forced), + EOS.

Sentence rule (`sentence_ends`; `shuffle_sentences` permutes the sentences): a sentence ends
after a token that ends one by itself (a newline, a piece whose text ends in '.', '!' or '?'
followed by whitespace, or EOS: in concat chunks the document boundary), or after a whitespace-only
token that follows a token ending in '.', '!' or '?'. With the byte vocabulary: "A b. C d?\nE" ->
"A b. " | "C d?\n" | "E" (the whitespace stays with the sentence it closes, so "3.14" or "e.g.x"
are not split). `boundary_vocab_kwargs` classifies every id of a vocabulary by its text;
SentencePiece pieces follow the same rule on their text.

Text infilling (`infilling_spans`): span lengths are drawn from Poisson(poisson_lambda) until they
cover round(mask_ratio * n) tokens, the last one cut to hit that count exactly (fairseq's
`add_whole_word_mask` with every token a word start). Each span, zero-length ones included, becomes
ONE mask token in the input (a zero-length span inserts a mask). Unlike fairseq, whose random span
starts may overlap and merge (masking fewer tokens than asked), spans here never overlap and are
separated by at least one kept token (when the text has enough of them), placed left to right in
draw order over a uniformly random composition of the kept tokens into the gaps: the masked count is
exact and every mask of the input is exactly one span. random_ratio of the masks (each
independently) become a random ordinary token instead (fairseq's mask_random).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from jaxlm.conventions import EOS_ID, PAD_ID
from jaxlm.objectives.common import (
    STREAM_BART_RANDOM,
    STREAM_BART_SPANS,
    STREAM_SENTENCES,
    Features,
    as_tokens,
    check_open_unit,
    check_positive,
    check_unit,
    decoder_features,
    i32,
    rng,
)
from jaxlm.objectives.masking import draw_non_special, mlm_vocab_kwargs


def _ids(values: Collection[int]) -> np.ndarray:
    return np.unique(np.asarray([int(v) for v in values], dtype=np.int64))


def sentence_ends(
    tokens: np.ndarray,
    *,
    end_ids: Collection[int],
    terminator_ids: Collection[int],
    space_ids: Collection[int],
) -> np.ndarray:
    """bool [n]: True where a sentence ends after the token (see the module docstring)."""
    tokens = as_tokens(tokens)
    after_terminator = np.concatenate([[False], np.isin(tokens[:-1], _ids(terminator_ids))])
    return np.isin(tokens, _ids(end_ids)) | (np.isin(tokens, _ids(space_ids)) & after_terminator)


def split_sentences(tokens: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """The sentences of `tokens` given `sentence_ends`; the last one may lack an end."""
    cuts = np.flatnonzero(ends[:-1]) + 1
    return [s for s in np.split(tokens, cuts) if s.size]


def shuffle_sentences(tokens: np.ndarray, *, seed: int, **boundary_ids: Any) -> np.ndarray:
    """`tokens` with its sentences in a uniformly random order (boundary_ids: of sentence_ends)."""
    tokens = as_tokens(tokens)
    sentences = split_sentences(tokens, sentence_ends(tokens, **boundary_ids))
    if len(sentences) < 2:
        return tokens.copy()
    order = rng(seed, STREAM_SENTENCES).permutation(len(sentences))
    return np.concatenate([sentences[i] for i in order]).astype(np.int32)


def poisson_span_lengths(
    gen: np.random.Generator, num_mask: int, poisson_lambda: float
) -> np.ndarray:
    """Poisson draws until they sum to >= num_mask, the last cut so that they sum to num_mask."""
    if num_mask <= 0:
        return np.zeros(0, np.int64)
    draws: list[np.ndarray] = []
    total = 0
    while total < num_mask:  # draw in blocks: one Poisson call per ~num_mask / lambda spans
        block = gen.poisson(poisson_lambda, size=max(8, int(num_mask / poisson_lambda) + 8))
        draws.append(block)
        total += int(block.sum())
    lengths = np.concatenate(draws)
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, num_mask))  # first index with cum >= num_mask
    lengths = lengths[: last + 1].copy()
    lengths[last] = num_mask - (cum[last - 1] if last else 0)
    return lengths


def random_composition(gen: np.random.Generator, total: int, parts: int) -> np.ndarray:
    """A uniformly random composition of `total` into `parts` non-negative parts."""
    bars = np.sort(gen.choice(total + parts - 1, size=parts - 1, replace=False))
    edges = np.concatenate([[-1], bars, [total + parts - 1]])
    return np.diff(edges) - 1


def infilling_spans(
    length: int, *, seed: int, mask_ratio: float = 0.3, poisson_lambda: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the masked spans of a text of `length` tokens, left to right.

    lengths: Poisson draws covering round(mask_ratio * length) tokens (see the module docstring);
    zero-length spans are insertion points. More spans than masked tokens (possible only in very
    short texts) would make the input longer than the text: the excess zero-length spans are
    dropped. Spans are separated by >= 1 kept token when there are enough kept tokens.
    """
    check_open_unit("mask_ratio", mask_ratio)
    check_positive("poisson_lambda", poisson_lambda)
    gen = rng(seed, STREAM_BART_SPANS)
    num_mask = int(round(mask_ratio * length))
    lengths = poisson_span_lengths(gen, num_mask, poisson_lambda)
    excess = lengths.size - num_mask
    if excess > 0:
        zeros = np.flatnonzero(lengths == 0)
        lengths = np.delete(lengths, zeros[:excess])
    k = lengths.size
    if k == 0:
        return np.zeros(0, np.int64), lengths
    kept = length - num_mask
    separated = kept >= k - 1
    gaps = random_composition(gen, kept - (k - 1 if separated else 0), k + 1)
    if separated:
        gaps[1:-1] += 1
    starts = np.cumsum(gaps[:-1]) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return starts.astype(np.int64), lengths.astype(np.int64)


def infill(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, mask_id: int) -> np.ndarray:
    """`tokens` with each span [start, start + length) replaced by one `mask_id`."""
    edges = np.zeros(tokens.size + 1, np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    keep = np.cumsum(edges)[:-1] == 0
    # A span's mask goes before the token at its start (the start itself is masked or, for a
    # zero-length span, kept): insert at `start`, all at once so earlier inserts shift nothing.
    return np.insert(np.where(keep, tokens, -1), starts, mask_id)[
        np.insert(keep, starts, True)].astype(np.int32)


def bart(
    tokens: np.ndarray,
    *,
    seed: int,
    vocab_size: int,
    mask_id: int,
    end_ids: Collection[int],
    terminator_ids: Collection[int],
    space_ids: Collection[int],
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
    permute_sentences: bool = True,
    random_ratio: float = 0.0,
    special_ids: Collection[int] = (PAD_ID, EOS_ID),
    eos_id: int = EOS_ID,
) -> Features:
    """BART denoising, encoder-decoder: sentences permuted (if `permute_sentences`), then text
    infilling; encoder_input_tokens = that + EOS, the decoder reconstructs tokens + EOS.

    The ids of the sentence rule (end_ids, terminator_ids, space_ids) come from the vocabulary
    (`boundary_vocab_kwargs`); random replacements (random_ratio) avoid `special_ids` and mask_id.
    """
    check_open_unit("mask_ratio", mask_ratio)
    check_positive("poisson_lambda", poisson_lambda)
    check_unit("random_ratio", random_ratio)
    if not 0 <= int(mask_id) < int(vocab_size):
        raise ValueError(f"mask_id={mask_id} must be in [0, vocab_size={vocab_size})")
    tokens = as_tokens(tokens)
    source = tokens
    if permute_sentences:
        source = shuffle_sentences(
            tokens, seed=seed, end_ids=end_ids, terminator_ids=terminator_ids, space_ids=space_ids)
    starts, lengths = infilling_spans(
        tokens.size, seed=seed, mask_ratio=mask_ratio, poisson_lambda=poisson_lambda)
    corrupted = infill(source, starts, lengths, int(mask_id))
    if random_ratio and starts.size:
        gen = rng(seed, STREAM_BART_RANDOM)
        masks = np.flatnonzero(corrupted == mask_id)
        pick = masks[gen.random(masks.size) < random_ratio]
        specials = _ids([*special_ids, mask_id, PAD_ID])
        specials = specials[(specials >= 0) & (specials < vocab_size)]
        corrupted[pick] = draw_non_special(gen, pick.size, int(vocab_size), specials)
    eos = i32([eos_id])
    return {
        "encoder_input_tokens": np.concatenate([corrupted, eos]),
        **decoder_features(np.concatenate([tokens, eos])),
    }


def boundary_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    """end_ids, terminator_ids and space_ids of the sentence rule, from each id's text."""
    end, terminator, space = [vocab.eos_id], [], []
    for i in vocab.regular_ids:
        text = vocab.decode([i])
        if not text:
            continue
        stripped = text.rstrip()
        if text.endswith("\n") or (stripped and stripped != text and stripped[-1] in ".!?"):
            end.append(i)
        if text[-1] in ".!?":
            terminator.append(i)
        if not stripped:
            space.append(i)
    return dict(end_ids=tuple(end), terminator_ids=tuple(terminator), space_ids=tuple(space))


def bart_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    """The mask id, the ids random replacement avoids, the sentence-rule ids and EOS."""
    return {**mlm_vocab_kwargs(vocab), **boundary_vocab_kwargs(vocab), "eos_id": vocab.eos_id}
