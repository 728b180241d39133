"""The tf.data stages of the pipeline, one window of documents at a time: the windows of an
epoch (read by index, or sequentially from TFRecord files), tokenize a window,
the concat-and-split scan, the skipped-document count, and the numpy packing (packing.py) called
through `tf.numpy_function` once per window or batch of chunks.

TensorFlow comes from `tfcompat.import_tf` when a stage is built, not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlm.data.layout import Layout
from jaxlm.data.negatives import OtherDocuments
from jaxlm.data.packing import chunk_rows, window_rows
from jaxlm.data.records import Documents, block_permutation, epoch_indices
from jaxlm.data.tfcompat import import_tf

# Whitespace as Python's str.isspace sees it (RE2's \s lacks \v, U+0085, the \p{Z} spaces, ...).
WHITESPACE = r"[\s\v\x{1c}-\x{1f}\x{85}\p{Z}]*"


def indexed_windows(
    docs: Documents,
    window: int,
    *,
    block: int,
    seed: int,
    start: tuple[int, int],
    end_epoch: int | None,
):
    """Windows {text [n], window, epoch} from (epoch, window) = start on, read by index: the
    records before `start` are never read (records.py gives the order)."""
    tf = import_tf()
    num = len(docs)
    per_epoch = -(-num // window)
    first = start[0] * per_epoch + start[1]
    last = 2**62 if end_epoch is None else max(first, end_epoch * per_epoch)

    def read(flat):
        epoch, w = divmod(int(flat), per_epoch)
        kw = dict(num=num, block=block, seed=seed, epoch=epoch)
        return docs.read(epoch_indices(w * window, (w + 1) * window, **kw))

    @tf.autograph.experimental.do_not_convert
    def element(flat):
        text = tf.numpy_function(read, [flat], tf.string, stateful=False)
        text.set_shape([None])
        return {"text": text, "window": flat % per_epoch, "epoch": flat // per_epoch}

    # Reading is cheap next to tokenizing: no parallelism asked for here (tf.data may add some).
    return tf.data.Dataset.range(first, last).map(element)


def sequential_windows(
    records: Any,
    window: int,
    *,
    block: int,
    seed: int,
    start: tuple[int, int],
    end_epoch: int | None,
):
    """The windows of `indexed_windows` from a sequential dataset of documents (TFRecord): the
    same order, but every record of the epoch before `start` is read (and dropped)."""
    tf = import_tf()
    e0, w0 = start

    def permute(b, texts, epoch):
        order = tf.numpy_function(
            lambda e, i, n: block_permutation(seed, int(e), int(i), int(n)),
            [epoch, b, tf.size(texts, out_type=tf.int64)],
            tf.int64,
            stateful=False,
        )
        order.set_shape([None])
        return tf.gather(texts, order)

    def epoch_windows(epoch):
        ds = records
        if block > 1:
            ds = ds.batch(block).enumerate().map(lambda b, x: permute(b, x, epoch)).unbatch()
        ds = ds.batch(window).enumerate()
        ds = ds.skip(tf.where(epoch == e0, tf.constant(w0, tf.int64), 0))
        return ds.map(lambda w, text: {"text": text, "window": w, "epoch": epoch})

    end = 2**62 if end_epoch is None else end_epoch
    return tf.data.Dataset.range(e0, max(e0, end)).flat_map(epoch_windows)


def tokenize_window_fn(
    vocab: Any, window: int, append_eos: bool, resume: tuple[int, int, int] | None = None
):
    """Window {text [n], window, epoch} -> non-empty documents' tokens, flat, with EOS appended.

    Output: values [T] int32, lengths [m], doc [m] (index in the epoch), start [m] (offset of the
    first token kept), epoch, window, skipped (whitespace-only or token-less documents), flush.
    resume (concat): (epoch, doc, offset): earlier documents and tokens are dropped.
    """
    tf = import_tf()

    @tf.autograph.experimental.do_not_convert
    def tokenize(w):
        text, epoch = w["text"], w["epoch"]
        doc = w["window"] * window + tf.range(tf.size(text, out_type=tf.int64))
        empty = tf.strings.regex_full_match(text, WHITESPACE)
        keep = ~empty
        if resume is not None:  # concat: the documents before the resume point are consumed
            keep &= ~((epoch == resume[0]) & (doc < resume[1]))
        tokens = vocab.tf_tokenize_batch(tf.boolean_mask(text, keep))
        values, lengths = tokens.flat_values, tokens.row_lengths()
        doc = tf.boolean_mask(doc, keep)
        has_tokens = lengths > 0  # text that a foreign SentencePiece drops entirely
        skipped = tf.reduce_sum(tf.cast(empty, tf.int64)) + tf.reduce_sum(
            tf.cast(~has_tokens, tf.int64)
        )
        doc, lengths = tf.boolean_mask(doc, has_tokens), tf.boolean_mask(lengths, has_tokens)
        n = tf.size(lengths, out_type=tf.int64)
        size = tf.size(values, out_type=tf.int64)
        if append_eos:  # scatter the tokens and one EOS per document into the longer stream
            positions = tf.range(size) + tf.repeat(tf.range(n), lengths)
            ends = tf.cumsum(lengths + 1) - 1
            values = tf.scatter_nd(
                tf.concat([positions, ends], 0)[:, None],
                tf.concat([values, tf.fill([n], tf.constant(vocab.eos_id, tf.int32))], 0),
                tf.reshape(size + n, [1]),
            )
            lengths += 1
        start = tf.zeros_like(doc)
        if resume is not None:  # drop what was consumed of the document resumed in
            first = (epoch == resume[0]) & (doc == resume[1])
            start = tf.minimum(tf.where(first, tf.constant(resume[2], tf.int64), start), lengths)
            row = tf.repeat(tf.range(n), lengths)
            within = tf.range(tf.size(values, out_type=tf.int64)) - tf.gather(
                tf.cumsum(lengths, exclusive=True), row
            )
            values = tf.boolean_mask(values, within >= tf.gather(start, row))
            lengths -= start
        return {
            "values": values,
            "lengths": lengths,
            "doc": doc,
            "start": start,
            "epoch": epoch,
            "window": w["window"],
            "skipped": skipped,
            "flush": tf.constant(False),
        }

    return tokenize


def flush_element(end_epoch: int):
    """A one-element dataset that makes the concat scan emit its remainder (finite datasets)."""
    tf = import_tf()
    z = tf.zeros([0], tf.int64)
    element = {
        "values": tf.zeros([0], tf.int32),
        "lengths": z,
        "doc": z,
        "start": z,
        "epoch": tf.constant(end_epoch, tf.int64),
        "window": tf.constant(0, tf.int64),
        "skipped": tf.constant(0, tf.int64),
        "flush": tf.constant(True),
    }
    return tf.data.Dataset.from_tensors(element)


def concat_initial_state(position: tuple[int, int, int]):
    tf = import_tf()
    return (
        tf.zeros([0], tf.int32),  # carried tokens
        tf.constant(position, tf.int64),  # where the last chunk ended
        tf.constant(0, tf.int64),  # skipped documents not yet reported
    )


def concat_step_fn(raw_len: int):
    """scan over windows: (carry, end of the last chunk, pending skipped) -> chunks of raw_len.

    Each chunk carries `_start` / `_position`: (epoch, doc, offset) of its first token and of the
    token after it (the resume point), `_key` (epoch, window) and `_skipped` for the count.
    """
    tf = import_tf()
    R = int(raw_len)

    @tf.autograph.experimental.do_not_convert
    def step(state, w):
        carry, last, pending = state
        splits = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(w["lengths"])], axis=0)
        nrows = tf.size(w["lengths"], out_type=tf.int64)
        combined = tf.concat([carry, w["values"]], axis=0)
        C = tf.size(carry, out_type=tf.int64)
        total = tf.size(combined, out_type=tf.int64)
        # Regular chunks hold exactly R tokens; a flush element emits the remainder instead.
        n_regular = tf.where(w["flush"], tf.constant(0, tf.int64), total // R)
        n_flush = tf.where(w["flush"], tf.minimum(total, 1), 0)
        n = n_regular + n_flush
        # The stream position just after chunk j, inside this window's tokens (0 < q <= size).
        q = tf.range(1, n_regular + 1, dtype=tf.int64) * R - C
        r = tf.searchsorted(splits[1:], q, side="right", out_type=tf.int64)
        r = tf.minimum(r, tf.maximum(nrows - 1, 0))
        offset = tf.gather(w["start"], r) + q - tf.gather(splits, r)
        ends = tf.stack([tf.fill([n_regular], w["epoch"]), tf.gather(w["doc"], r), offset], 1)
        ends = tf.concat([ends, tf.tile(last[None], tf.stack([n_flush, 1]))], axis=0)
        starts = tf.concat([last[None], ends], axis=0)
        used = tf.minimum(n * R, total)
        chunks = tf.pad(combined[:used], [[0, n * R - used]])
        chunks = tf.reshape(chunks, tf.stack([n, tf.constant(R, tf.int64)]))
        all_skipped = pending + w["skipped"]
        out = {
            "chunk": chunks,
            "length": tf.minimum(used - tf.range(n, dtype=tf.int64) * R, R),
            "_start": starts[:-1],
            "_position": ends,
            "_key": tf.tile(tf.stack([w["epoch"], w["window"]])[None], tf.stack([n, 1])),
            "_skipped": tf.where(tf.range(n) == 0, all_skipped, 0),
        }
        zero = tf.constant(0, tf.int64)
        return (combined[used:], starts[-1], tf.where(n > 0, zero, all_skipped)), out

    return step


def pending_skipped_fn():
    """scan over greedy windows: a window without documents hands its skipped count on."""
    tf = import_tf()

    @tf.autograph.experimental.do_not_convert
    def step(pending, w):
        total = pending + w["skipped"]
        has_rows = tf.size(w["lengths"]) > 0
        w = dict(w)
        w["skipped"] = tf.where(has_rows, total, 0)
        return tf.where(has_rows, tf.constant(0, tf.int64), total), w

    return step


def _numpy_rows(layout: Layout, np_fn, inputs):
    tf = import_tf()
    keys = layout.feature_keys
    values = tf.numpy_function(
        lambda *args: _ordered(np_fn(*args), keys),
        inputs,
        [tf.int32] * len(keys),
        stateful=False,
    )
    out = dict(zip(keys, values, strict=True))
    for k in keys:
        out[k].set_shape([None, layout.feature_length(k)])
    return out


def _ordered(rows: Mapping[str, np.ndarray], keys: Sequence[str]) -> list[np.ndarray]:
    return [rows[k] for k in keys]


def chunks_to_rows_fn(
    layout: Layout, seed: int, process_index: int, other_documents: OtherDocuments | None = None
):
    """concat: a batch of chunks -> model rows (one numpy_function call per batch)."""
    tf = import_tf()

    def np_fn(chunks, lengths, starts):
        return chunk_rows(layout, chunks, lengths, starts, seed=seed, process_index=process_index,
                          other_documents=other_documents)

    @tf.autograph.experimental.do_not_convert
    def fn(b):
        out = _numpy_rows(layout, np_fn, [b["chunk"], b["length"], b["_start"]])
        out.update({k: b[k] for k in ("_position", "_key", "_skipped")})
        return out

    return fn


def window_to_rows_fn(
    layout: Layout, seed: int, process_index: int, other_documents: OtherDocuments | None = None
):
    """greedy / none: a window of documents -> packed rows (one numpy_function call per window),
    each with `_position` (epoch, window, rows of the window consumed through it)."""
    tf = import_tf()

    def np_fn(values, lengths, docs, epoch):
        return window_rows(
            layout,
            values,
            lengths,
            docs,
            seed=seed,
            process_index=process_index,
            epoch=int(epoch),
            other_documents=other_documents,
        )

    @tf.autograph.experimental.do_not_convert
    def fn(w):
        out = _numpy_rows(layout, np_fn, [w["values"], w["lengths"], w["doc"], w["epoch"]])
        n = tf.shape(out[layout.feature_keys[0]], out_type=tf.int64)[0]
        epoch, window = tf.fill([n], w["epoch"]), tf.fill([n], w["window"])
        out["_position"] = tf.stack([epoch, window, tf.range(1, n + 1)], axis=1)
        out["_key"] = tf.stack([epoch, window], axis=1)
        out["_skipped"] = tf.where(tf.range(n) == 0, w["skipped"], 0)
        return out

    return fn
