"""Packing as pure numpy: example seeds, documents -> pieces -> objective -> rows.

A function of its arguments (no TensorFlow, no state; NSP's other documents are read by index,
a deterministic function of the example seed too): the tf.data stages (stages.py) call it
through `tf.numpy_function` once per window of documents (greedy / none) or per batch of chunks
(concat), and tests call it directly. What is packed how: the table in layout.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from jaxlm.conventions import EOS_ID
from jaxlm.data.layout import Layout
from jaxlm.objectives.common import mix_seeds

if TYPE_CHECKING:
    from jaxlm.data.negatives import OtherDocuments


# ----------------------------------------------------------------------------------------------
# Documents -> pieces -> examples -> rows


def split_pieces(
    values: np.ndarray, lengths: np.ndarray, piece_len: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Cuts each document (a row of a ragged [values, lengths]) into pieces of <= piece_len.

    Returns (pieces, document row of each piece, piece index within its document). Empty
    documents give no piece.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n_pieces = -(-lengths // piece_len)
    doc = np.repeat(np.arange(lengths.size), n_pieces)
    first_piece = np.cumsum(n_pieces) - n_pieces
    index = np.arange(doc.size) - first_piece[doc]
    starts = (np.cumsum(lengths) - lengths)[doc] + index * piece_len
    return np.split(np.asarray(values, dtype=np.int32), starts[1:]), doc, index


def apply_objective(
    layout: Layout,
    pieces: Sequence[np.ndarray],
    seeds: np.ndarray,
    others: Sequence[list[np.ndarray]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The objective on every piece; `others[i]` (forms with `other_documents`) goes to piece i."""
    fn = layout.objective_fn
    if others is None:
        return [fn(p, int(s)) for p, s in zip(pieces, seeds, strict=True)]
    return [fn(p, int(s), others=o) for p, s, o in zip(pieces, seeds, others, strict=True)]


def assemble_rows(
    layout: Layout, examples: Sequence[Mapping[str, np.ndarray]], *, greedy: bool
) -> dict[str, np.ndarray]:
    """Rows [R, length] of every feature: first-fit packing (greedy) or one example per row.

    Padding is 0; with `layout.packed`, *_segment_ids / *_positions are added.
    """
    n = len(examples)
    caps = np.array([s.length for s in layout.streams], dtype=np.int64)
    lens = np.array(
        [[ex[s.length_key].size for s in layout.streams] for ex in examples], dtype=np.int64
    ).reshape(n, len(caps))
    too_long = np.flatnonzero((lens > caps).any(axis=1))
    if too_long.size:
        raise ValueError(
            f"{layout.objective}: an example of lengths {lens[too_long[0]].tolist()} does not fit "
            f"the row lengths {caps.tolist()}"
        )
    row = np.arange(n)
    offset = np.zeros_like(lens)
    segment = np.ones(n, dtype=np.int64)
    n_rows = n
    if greedy and n:
        remaining = np.empty_like(lens)
        count = np.zeros(n, dtype=np.int64)
        n_rows = 0
        for i in range(n):
            fits = np.flatnonzero((remaining[:n_rows] >= lens[i]).all(axis=1))
            r = int(fits[0]) if fits.size else n_rows
            if r == n_rows:
                remaining[r] = caps
                n_rows += 1
            row[i], offset[i] = r, caps - remaining[r]
            remaining[r] -= lens[i]
            count[r] += 1
            segment[i] = count[r]
    out: dict[str, np.ndarray] = {}
    for s_i, stream in enumerate(layout.streams):
        ls = lens[:, s_i]
        starts = np.cumsum(ls) - ls
        within = np.arange(int(ls.sum())) - np.repeat(starts, ls)
        dest = np.repeat(row * stream.length + offset[:, s_i], ls) + within
        flat = np.zeros(n_rows * stream.length, dtype=np.int32)
        for key in stream.keys:
            values = np.concatenate([ex[key] for ex in examples]) if n else flat[:0]
            out[key] = _scatter(flat, dest, values, n_rows, stream.length)
        if layout.packed:
            out[f"{stream.prefix}_segment_ids"] = _scatter(
                flat, dest, np.repeat(segment, ls), n_rows, stream.length
            )
            out[f"{stream.prefix}_positions"] = _scatter(flat, dest, within, n_rows, stream.length)
    return {k: out[k] for k in layout.feature_keys}


def _scatter(zeros: np.ndarray, dest: np.ndarray, values: np.ndarray, rows: int, length: int):
    a = zeros.copy()
    a[dest] = values
    return a.reshape(rows, length)


def _check_other_documents(layout: Layout, other_documents: OtherDocuments | None) -> None:
    if layout.other_documents and other_documents is None:
        raise ValueError(f"{layout.objective} draws other documents: pass `other_documents`")


def window_rows(
    layout: Layout,
    values: np.ndarray,
    lengths: np.ndarray,
    docs: np.ndarray,
    *,
    seed: int,
    process_index: int,
    epoch: int,
    other_documents: OtherDocuments | None = None,
) -> dict[str, np.ndarray]:
    """greedy / none: one window of tokenized documents -> rows.

    values / lengths: the documents' tokens, EOS already appended where `layout.append_eos`.
    docs: each document's index in its epoch (for the example seeds).
    other_documents: where forms with `other_documents` (NSP) draw them (negatives.py).
    """
    _check_other_documents(layout, other_documents)
    values, lengths = np.asarray(values, dtype=np.int32), np.asarray(lengths, dtype=np.int64)
    pieces, doc_row, index = split_pieces(values, lengths, layout.raw_len)
    seeds = mix_seeds(seed, process_index, epoch, np.asarray(docs)[doc_row], index)
    others = None
    if layout.other_documents:
        others = other_documents.for_pieces(epoch, np.asarray(docs)[doc_row], seeds)
    examples = apply_objective(layout, pieces, seeds, others)
    return assemble_rows(layout, examples, greedy=layout.packing == "greedy")


def chunk_rows(
    layout: Layout,
    chunks: np.ndarray,
    lengths: np.ndarray,
    starts: np.ndarray,
    *,
    seed: int,
    process_index: int,
    other_documents: OtherDocuments | None = None,
) -> dict[str, np.ndarray]:
    """concat: a batch of chunks [B, raw_len] (the first `lengths` tokens real) -> rows.

    starts [B, 3]: (epoch, document, offset) of each chunk's first token, for the seeds (and,
    with `other_documents`, to know which document a drawn one must not be).
    """
    _check_other_documents(layout, other_documents)
    chunks, lengths = np.asarray(chunks, dtype=np.int32), np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1, 3)
    seeds = mix_seeds(seed, process_index, starts[:, 0], starts[:, 1], starts[:, 2])
    if layout.batch_objective_fn is not None and not layout.other_documents:
        return _batch_rows(layout, chunks, lengths, seeds)
    pieces = [c[:n] for c, n in zip(chunks, lengths, strict=True)]
    others = None
    if layout.other_documents:
        eos_id = int(layout.kwargs.get("eos_id", EOS_ID))
        others = other_documents.for_chunks(pieces, starts, seeds, eos_id)
    return assemble_rows(layout, apply_objective(layout, pieces, seeds, others), greedy=False)


def _batch_rows(
    layout: Layout, chunks: np.ndarray, lengths: np.ndarray, seeds: np.ndarray
) -> dict[str, np.ndarray]:
    """concat rows of an objective with a batch form: one call per chunk length (all chunks but
    a finite dataset's last are full), rows as `assemble_rows(..., greedy=False)` makes them."""
    out = {k: np.zeros((chunks.shape[0], layout.feature_length(k)), np.int32)
           for k in layout.feature_keys}
    for n in np.unique(lengths):
        rows = np.flatnonzero(lengths == n)
        features = layout.batch_objective_fn(chunks[rows, :n], seeds[rows])
        for key, values in features.items():
            if values.shape[1] > out[key].shape[1]:
                raise ValueError(
                    f"{layout.objective}: {n} tokens give {key} of length {values.shape[1]}, "
                    f"more than its rows' {out[key].shape[1]}"
                )
            out[key][rows, : values.shape[1]] = values
    return out
