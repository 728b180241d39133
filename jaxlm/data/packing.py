"""Packing for the input pipeline: layouts, example seeds, objectives on pieces, first-fit rows,
and the tf.data stages around them (tokenize a window, concat-and-split scan, numpy calls).

The numpy part is a pure function of its arguments (no TensorFlow, no state): the tf.data stages
call it through `tf.numpy_function` once per window of documents (greedy / none) or per batch of
chunks (concat), and tests call it directly. TensorFlow is imported only by the tf.data stages.

Layout per objective (`resolve_layout`; L = seq_len):

  objective        family           default packing  raw tokens per example  encoder  decoder
  clm              decoder          concat           L                       -        L
  mlm              encoder          concat           L                       L        -
  span_corruption  encoder_decoder  concat           span_corruption_lengths(L)[0]  L  targets
  prefix_lm        decoder          greedy           L                       -        L
  prefix_lm        encoder_decoder  greedy           L - 1  (prefix_lm_encoder_decoder)  L  L
  mlm              encoder_decoder  concat           L - 1  (mlm_encoder_decoder)        L  L
  ul2              encoder_decoder  greedy           L - 2  (mode token + EOS)           L  >= L

'concat' (T5's concat-and-split): documents + EOS are concatenated into one stream and cut into
chunks of exactly the raw length, so CLM and MLM rows hold L real tokens and span-corruption inputs
come out exactly L (targets exactly `span_corruption_lengths(L)[1]`: 568 -> 512 / 114). No segment
ids: attention crosses document boundaries, marked by EOS, as in GPT, T5 and RoBERTa's
FULL-SENTENCES. The length-preserving objectives thus see the very same chunks (as in the T5
paper's objective comparison), and the objective runs once per chunk, not once per document.
'greedy': each document (+ EOS, unless the objective appends its own EOS: span corruption, prefix
LM encoder-decoder, UL2) is split into pieces of at most the raw length (long documents are split,
never truncated), the objective runs on each piece, and the variable-length outputs are packed
first-fit into rows with `*_segment_ids` (1, 2, ... per example, 0 on padding) and `*_positions`
(restarting at 0 per example); encoder and decoder streams of one example share its segment id.
'none': as greedy but one piece per row.
Defaults: concat where the objective's output length is fixed by the chunk (CLM, MLM, span
corruption); greedy where the outputs vary (prefix LM's split, UL2's denoisers), which keeps
examples inside one document. `packing='greedy'` gives MLM document-isolated examples (BERT /
DOC-SENTENCES style) at the cost of one objective call per document.
The decoder length of greedy / none rows is the largest target any piece can produce (computed from
the objective's own length arithmetic), at least L for the prefix-LM / UL2 forms.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlm import objectives as obj

PACKINGS = ("concat", "greedy", "none")
# Whitespace as Python's str.isspace sees it (RE2's \s lacks \v, U+0085, the \p{Z} spaces, ...).
WHITESPACE = r"[\s\v\x{1c}-\x{1f}\x{85}\p{Z}]*"
FAMILIES = ("decoder", "encoder", "encoder_decoder")
DEFAULT_PACKING = {
    "clm": "concat",
    "span_corruption": "concat",
    "mlm": "concat",
    "mlm_encoder_decoder": "concat",
    "prefix_lm": "greedy",
    "prefix_lm_encoder_decoder": "greedy",
    "ul2": "greedy",
}
# Objectives that end their own outputs with EOS: documents get no extra EOS in greedy / none.
_ADDS_OWN_EOS = ("span_corruption", "prefix_lm_encoder_decoder", "mlm_encoder_decoder", "ul2")
_NEEDS = {
    "clm": ("decoder",),
    "prefix_lm": ("decoder", "encoder_decoder"),
    "mlm": ("encoder", "encoder_decoder"),
    "span_corruption": ("encoder_decoder",),
    "ul2": ("encoder_decoder",),
}


@dataclasses.dataclass(frozen=True)
class Stream:
    prefix: str  # 'encoder' | 'decoder'
    length: int
    keys: tuple[str, ...]  # the objective's features of this stream

    @property
    def length_key(self) -> str:  # the feature whose length is the example's length in the stream
        return f"{self.prefix}_input_tokens"


@dataclasses.dataclass(frozen=True)
class Layout:
    """What the pipeline builds for one (objective, family, seq_len, packing, vocabulary)."""

    objective: str  # the objective function applied (prefix_lm resolved to its family's form)
    kwargs: Mapping[str, Any]  # its keyword arguments, vocabulary ids filled in
    family: str
    packing: str
    raw_len: int  # tokens per concat chunk / most tokens per greedy piece
    streams: tuple[Stream, ...]
    append_eos: bool  # EOS appended to every document before chunking / splitting

    @property
    def packed(self) -> bool:  # rows carry *_segment_ids and *_positions
        return self.packing != "concat"

    @property
    def lengths(self) -> dict[str, int]:
        return {s.prefix: s.length for s in self.streams}

    @property
    def feature_keys(self) -> tuple[str, ...]:
        keys: list[str] = []
        for s in self.streams:
            keys += s.keys
            if self.packed:
                keys += [f"{s.prefix}_segment_ids", f"{s.prefix}_positions"]
        return tuple(keys)

    def feature_length(self, key: str) -> int:
        return self.lengths[key.split("_", 1)[0]]

    @functools.cached_property
    def objective_fn(self) -> Any:
        return obj.get_objective(self.objective, **self.kwargs)


def _vocab_kwargs(name: str, vocab: Any) -> dict[str, Any]:
    if name in ("mlm", "mlm_encoder_decoder"):
        # Every id that is not ordinary text is special: never selected, never a random
        # replacement (sentinels, mode ids, the byte vocabulary's unused ids, ...).
        regular = vocab.regular_ids
        specials = [i for i in range(vocab.vocab_size) if i not in regular]
        return dict(vocab_size=vocab.vocab_size, mask_id=vocab.mask_id, special_ids=specials)
    return {
        "span_corruption": dict(vocab_size=vocab.vocab_size, eos_id=vocab.eos_id),
        "prefix_lm": dict(eos_id=vocab.eos_id),
        "prefix_lm_encoder_decoder": dict(eos_id=vocab.eos_id),
        "ul2": dict(vocab_size=vocab.vocab_size, mode_ids=vocab.mode_ids, eos_id=vocab.eos_id),
    }.get(name, {})


def resolve_layout(
    objective: str,
    family: str,
    seq_len: int,
    vocab: Any,
    *,
    packing: str = "auto",
    objective_kwargs: Mapping[str, Any] | None = None,
) -> Layout:
    """Checks (objective, family, packing) and derives the lengths; see the module docstring."""
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is unknown; valid families: {list(FAMILIES)}")
    if objective not in _NEEDS:
        raise ValueError(f"unknown objective {objective!r}; valid names: {list(_NEEDS)}")
    if family not in _NEEDS[objective]:
        raise ValueError(
            f"objective {objective!r} needs the model family "
            f"{' or '.join(repr(f) for f in _NEEDS[objective])}, got family {family!r}"
        )
    # Objectives with a second, encoder-decoder form run under that form's own name.
    name = (
        f"{objective}_encoder_decoder"
        if family == "encoder_decoder" and objective in ("prefix_lm", "mlm")
        else objective
    )
    if packing == "auto":
        packing = DEFAULT_PACKING[name]
    if packing not in PACKINGS:
        raise ValueError(f"packing {packing!r} is unknown; valid: ['auto', {', '.join(PACKINGS)}]")
    if not isinstance(seq_len, (int, np.integer)) or seq_len < 8:
        raise ValueError(f"seq_len={seq_len!r} is invalid: expected an int >= 8")
    kwargs = {**_vocab_kwargs(name, vocab), **dict(objective_kwargs or {})}
    obj.get_objective(name, **kwargs)  # validates the kwargs eagerly

    L = int(seq_len)
    if name == "span_corruption":
        density = kwargs.get("noise_density", 0.15)
        mean = kwargs.get("mean_noise_span_length", 3.0)
        raw, targets = obj.span_corruption_lengths(L, density, mean)
        enc_max, dec_max = _span_max_lengths(raw, density, mean)
        if enc_max > L:  # cannot happen with T5's arithmetic; guards a future change of it
            raise ValueError(f"span corruption of {raw} tokens gives {enc_max} > {L} inputs")
        streams = {"encoder": L, "decoder": max(targets, dec_max)}
    elif name in ("prefix_lm_encoder_decoder", "mlm_encoder_decoder"):
        raw = L - 1  # + EOS
        streams = {"encoder": L, "decoder": L}
    elif name == "ul2":
        raw = L - 2
        dec = 2
        for d in kwargs.get("denoisers", obj.DEFAULT_UL2_DENOISERS):
            if d.kind == "span":
                enc_max, dec_max = _span_max_lengths(raw, d.noise_density, d.mean_span)
                if enc_max + 1 > L:
                    raise ValueError(f"UL2 denoiser {d} gives {enc_max + 1} > {L} inputs")
                dec = max(dec, dec_max)
            else:
                dec = max(dec, raw)
        streams = {"encoder": L, "decoder": max(L, dec)}
    else:  # clm, prefix_lm (decoder-only), mlm: outputs as long as the input
        raw = L
        streams = {"encoder" if name == "mlm" else "decoder": L}
    keys = obj.OUTPUT_KEYS[name]
    return Layout(
        objective=name,
        kwargs=kwargs,
        family=family,
        packing=packing,
        raw_len=raw,
        streams=tuple(
            Stream(p, n, tuple(k for k in keys if k.startswith(p))) for p, n in streams.items()
        ),
        append_eos=packing == "concat" or name not in _ADDS_OWN_EOS,
    )


def _span_max_lengths(raw: int, density: float, mean: float) -> tuple[int, int]:
    """Largest (inputs, targets) of span corruption over every piece length 1..raw (EOS included),
    with the arithmetic of `objectives.random_spans_noise_mask`."""
    enc, dec = 2, 2  # a 1-token piece: [token, EOS] / [sentinel, EOS]
    for n in range(2, raw + 1):
        noise = min(max(int(round(n * density)), 1), n - 1)
        spans = min(max(int(round(noise / mean)), 1), noise, n - noise)
        enc, dec = max(enc, n - noise + spans + 1), max(dec, noise + spans + 1)
    return enc, dec


# ----------------------------------------------------------------------------------------------
# Example seeds

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix_seeds(*keys: Any) -> np.ndarray:
    """Per-example seeds: splitmix64 chained over broadcast int keys -> int64 in [0, 2**63).

    The pipeline seeds an example by (seed, process, epoch, document, piece) in greedy / none and
    (seed, process, epoch, document, offset) of a chunk's first token in concat, so an example's
    randomness depends only on where its tokens come from: the same after a restart.
    """
    arrays = np.broadcast_arrays(*[np.asarray(k, dtype=np.int64) for k in keys])
    h = np.zeros(arrays[0].shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in arrays:
            x = h ^ (k.astype(np.uint64) + _GOLDEN)
            x = (x ^ (x >> np.uint64(30))) * _M1
            x = (x ^ (x >> np.uint64(27))) * _M2
            h = x ^ (x >> np.uint64(31))
    return (h >> np.uint64(1)).astype(np.int64)


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
    layout: Layout, pieces: Sequence[np.ndarray], seeds: np.ndarray
) -> list[dict[str, np.ndarray]]:
    fn = layout.objective_fn
    return [fn(p, int(s)) for p, s in zip(pieces, seeds, strict=True)]


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


def window_rows(
    layout: Layout,
    values: np.ndarray,
    lengths: np.ndarray,
    docs: np.ndarray,
    *,
    seed: int,
    process_index: int,
    epoch: int,
) -> dict[str, np.ndarray]:
    """greedy / none: one window of tokenized documents -> rows.

    values / lengths: the documents' tokens, EOS already appended where `layout.append_eos`.
    docs: each document's index in its epoch (for the example seeds).
    """
    values, lengths = np.asarray(values, dtype=np.int32), np.asarray(lengths, dtype=np.int64)
    pieces, doc_row, index = split_pieces(values, lengths, layout.raw_len)
    seeds = mix_seeds(seed, process_index, epoch, np.asarray(docs)[doc_row], index)
    examples = apply_objective(layout, pieces, seeds)
    return assemble_rows(layout, examples, greedy=layout.packing == "greedy")


def chunk_rows(
    layout: Layout,
    chunks: np.ndarray,
    lengths: np.ndarray,
    starts: np.ndarray,
    *,
    seed: int,
    process_index: int,
) -> dict[str, np.ndarray]:
    """concat: a batch of chunks [B, raw_len] (the first `lengths` tokens real) -> rows.

    starts [B, 3]: (epoch, document, offset) of each chunk's first token, for the seeds.
    """
    chunks, lengths = np.asarray(chunks, dtype=np.int32), np.asarray(lengths, dtype=np.int64)
    if layout.objective == "clm":  # vectorized; identical to objectives.clm + padding
        length = layout.streams[0].length
        targets = np.zeros((chunks.shape[0], length), dtype=np.int32)
        targets[:, : chunks.shape[1]] = chunks * (np.arange(chunks.shape[1]) < lengths[:, None])
        inputs = np.zeros_like(targets)
        inputs[:, 1:] = targets[:, :-1]
        inputs *= np.arange(length) < lengths[:, None]
        return {
            "decoder_target_tokens": targets,
            "decoder_input_tokens": inputs,
            "decoder_loss_weights": (targets != obj.PAD_ID).astype(np.int32),
        }
    starts = np.asarray(starts, dtype=np.int64).reshape(-1, 3)
    seeds = mix_seeds(seed, process_index, starts[:, 0], starts[:, 1], starts[:, 2])
    pieces = [c[:n] for c, n in zip(chunks, lengths, strict=True)]
    return assemble_rows(layout, apply_objective(layout, pieces, seeds), greedy=False)


# ----------------------------------------------------------------------------------------------
# tf.data stages (TensorFlow is imported lazily, GPUs hidden): one window of documents at a time


def _tf():
    from jaxlm.data.tokenizer import import_tf

    return import_tf()


def tokenize_window_fn(
    vocab: Any, window: int, append_eos: bool, resume: tuple[int, int, int] | None = None
):
    """Window {text [n], window, epoch} -> non-empty documents' tokens, flat, with EOS appended.

    Output: values [T] int32, lengths [m], doc [m] (index in the epoch), start [m] (offset of the
    first token kept), epoch, window, skipped (whitespace-only or token-less documents), flush.
    resume (concat): (epoch, doc, offset): earlier documents and tokens are dropped.
    """
    tf = _tf()

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
    tf = _tf()
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
    tf = _tf()
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
    tf = _tf()
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
    tf = _tf()

    @tf.autograph.experimental.do_not_convert
    def step(pending, w):
        total = pending + w["skipped"]
        has_rows = tf.size(w["lengths"]) > 0
        w = dict(w)
        w["skipped"] = tf.where(has_rows, total, 0)
        return tf.where(has_rows, tf.constant(0, tf.int64), total), w

    return step


def _numpy_rows(layout: Layout, np_fn, inputs):
    tf = _tf()
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


def chunks_to_rows_fn(layout: Layout, seed: int, process_index: int):
    """concat: a batch of chunks -> model rows (one numpy_function call per batch)."""
    tf = _tf()

    def np_fn(chunks, lengths, starts):
        return chunk_rows(layout, chunks, lengths, starts, seed=seed, process_index=process_index)

    @tf.autograph.experimental.do_not_convert
    def fn(b):
        out = _numpy_rows(layout, np_fn, [b["chunk"], b["length"], b["_start"]])
        out.update({k: b[k] for k in ("_position", "_key", "_skipped")})
        return out

    return fn


def window_to_rows_fn(layout: Layout, seed: int, process_index: int):
    """greedy / none: a window of documents -> packed rows (one numpy_function call per window),
    each with `_position` (epoch, window, rows of the window consumed through it)."""
    tf = _tf()

    def np_fn(values, lengths, docs, epoch):
        return window_rows(
            layout,
            values,
            lengths,
            docs,
            seed=seed,
            process_index=process_index,
            epoch=int(epoch),
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
