"""BERT's next-sentence prediction (Devlin et al. 2019): MLM on a segment pair plus a binary
"is B the continuation of A" label read from [CLS].

Where "another document" comes from: the objective runs on a *window* of the concatenated token
stream (concat packing with a raw length of two rows, `nsp_stream_lengths`), in which EOS marks the
document boundaries. The pair fills at most half of it (len(tokens) // 2 - 3 text tokens plus [CLS]
and two [SEP]). A is the start of the window's first document; B is, by the seed, with probability
one half the text that follows A in the same document (label 1, IsNext), else a segment starting at
a uniformly random place of another document (label 0, NotNext), chosen uniformly among the
window's later documents and `others`. The pipeline passes as `others` one document of the whole
split drawn by the example's seed, never A's own (jaxlm/data/negatives.py, as BERT draws from the
corpus), so a NotNext draw always has another document, even for a window inside one long document:
the labels are 50/50 at any seq_len. Called without `others`, a window with a single document
gives a true pair whatever the seed (`nsp_pair` reports which case applied).

Features (encoder stream, so they pack like any encoder feature): encoder_input_tokens (the pair,
MLM-corrupted), encoder_target_tokens, encoder_loss_weights (MLM), encoder_token_types (0 on
[CLS] A [SEP], 1 on B [SEP]), encoder_nsp_labels (the label at [CLS], 0 elsewhere) and
encoder_nsp_weights (1 at [CLS]: the position whose pooled state the classification head reads).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from jaxlm.conventions import EOS_ID, PAD_ID, UNK_ID
from jaxlm.objectives.common import STREAM_NSP, Features, as_tokens, i32, rng
from jaxlm.objectives.masking import mlm, mlm_vocab_kwargs


def documents(tokens: np.ndarray, eos_id: int = EOS_ID) -> list[np.ndarray]:
    """The non-empty EOS-separated documents of a window, EOS dropped."""
    tokens = as_tokens(tokens)
    parts = np.split(tokens, np.flatnonzero(tokens == eos_id) + 1)
    parts = [p[p != eos_id] for p in parts]
    return [p for p in parts if p.size]


def nsp_pair(
    tokens: np.ndarray, *, seed: int, eos_id: int = EOS_ID, others: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(A, B, label, label_drawn): label 1 if B follows A in its document, 0 if B comes from
    another document (a later one of the window or one of `others`, documents that are not A's);
    label_drawn is False where the window could not give what the seed drew (a NotNext draw with
    no other document gives a true pair)."""
    tokens = as_tokens(tokens)
    budget = max(tokens.size // 2 - 3, 0)
    docs = documents(tokens, eos_id)
    if budget < 2 or not docs:
        return tokens[:0], tokens[:0], 1, False
    gen = rng(seed, STREAM_NSP)
    want_next = bool(gen.random() < 0.5)
    first = docs[0]
    candidates = docs[1:] + [d for d in others if d.size]
    if want_next or not candidates:
        seg = first[:budget]
        if seg.size < 2:  # a one-token document: nothing follows A in it
            return seg, seg[:0], 1, False
        a = int(gen.integers(1, seg.size))
        return seg[:a], seg[a:], 1, want_next
    a = int(gen.integers(1, min(first.size, budget - 1) + 1))
    other = candidates[int(gen.integers(len(candidates)))]
    room = budget - a
    start = int(gen.integers(0, max(other.size - room, 0) + 1))
    return first[:a], other[start:start + room], 0, True


def nsp(
    tokens: np.ndarray,
    *,
    seed: int,
    vocab_size: int,
    mask_id: int,
    cls_id: int,
    sep_id: int,
    eos_id: int = EOS_ID,
    mask_rate: float = 0.15,
    mask_token_fraction: float = 0.8,
    random_token_fraction: float = 0.1,
    special_ids: Collection[int] = (PAD_ID, EOS_ID, UNK_ID),
    others: Sequence[np.ndarray] = (),
) -> Features:
    """[CLS] A [SEP] B [SEP] with BERT masking and the next-sentence label (module docstring);
    `others`: documents, not A's, that NotNext may draw B from besides the window's own."""
    for name, value in (("cls_id", cls_id), ("sep_id", sep_id)):
        if not 0 <= int(value) < int(vocab_size) or int(value) in (PAD_ID, int(mask_id)):
            raise ValueError(f"{name}={value} must be an id in [0, {vocab_size}) other than pad "
                             "and the mask id")
    a, b, label, _ = nsp_pair(tokens, seed=seed, eos_id=eos_id, others=others)
    pair = np.concatenate([i32([cls_id]), a, i32([sep_id]), b, i32([sep_id])])
    masked = mlm(pair, seed=seed, vocab_size=vocab_size, mask_id=mask_id, mask_rate=mask_rate,
                 mask_token_fraction=mask_token_fraction,
                 random_token_fraction=random_token_fraction,
                 special_ids=(*special_ids, cls_id, sep_id))
    first = np.zeros(pair.size, np.int32)
    first[0] = 1
    types = np.zeros(pair.size, np.int32)
    types[a.size + 2:] = 1
    return {**masked, "encoder_token_types": types, "encoder_nsp_labels": first * label,
            "encoder_nsp_weights": first}


def nsp_vocab_kwargs(vocab: Any) -> dict[str, Any]:
    return {**mlm_vocab_kwargs(vocab), "cls_id": vocab.cls_id, "sep_id": vocab.sep_id,
            "eos_id": vocab.eos_id}


def nsp_stream_lengths(seq_len: int, kwargs: Mapping[str, Any]) -> tuple[int, dict[str, int]]:
    """Windows of two rows of raw tokens; the pair fills at most one row."""
    del kwargs
    return 2 * seq_len, {"encoder": seq_len}
