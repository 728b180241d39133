"""Decoding with the models' KV cache: greedy, temperature, top-k, top-p; span and mask filling.

    out = sample(model, params, [vocab.encode("def f(x):")], max_new_tokens=32)
    text = vocab.decode(out.tokens[0])
    fill_spans(t5_model, params, "The <extra_id_0> sat on the <extra_id_1>.", vocab)
    fill_masks(bert_model, params, [encode_text(vocab, "Paris is the [MASK] of France.")],
               mask_id=vocab.mask_id)

Prompts are RIGHT-padded. Every row shares the cache index (the models keep one scalar index per
stack), so the common prompt prefix (the shortest prompt) is prefilled in one call and the loop then
steps one position at a time for the whole batch: a row still inside its prompt is fed its own
next prompt token (teacher forcing) and a row past it is fed what it sampled. Positions, masks and
the cache contents of every row are therefore exactly those of decoding that prompt alone, with no
padding slot ever attended, for every position scheme (learned, rotary, relative). The whole
generation (prefill, loop, stopping at EOS) is one jitted function; the loop is a
`jax.lax.while_loop` that ends when every row has met EOS or its `max_new_tokens`.

Decoder inputs follow the T5X convention of the objectives: the decoder stream starts with pad (0)
as BOS, so `sample` prepends `bos_id=0` to each prompt (pass `bos_id=None` for models trained
otherwise, e.g. an imported GPT-2, whose prompts may start with its own <|endoftext|>).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.conventions import EOS_ID, PAD_ID
from jaxlm.models import init_decode_cache

Array = jax.Array
# Markers understood by `encode_text`: T5 sentinels and the MLM mask token.
MARKER_RE = re.compile(r"<extra_id_(\d+)>|\[MASK\]")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. temperature 0 is greedy (top_k / top_p then change nothing)."""

    temperature: float = 0.0
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature={self.temperature!r} is invalid: expected >= 0.")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k!r} is invalid: expected None or >= 1.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p!r} is invalid: expected None or in (0, 1].")


class Generated(NamedTuple):
    """The continuation of each row: tokens [batch, max_new_tokens] (EOS included, 0 after it) and
    lengths [batch] (tokens generated, EOS included)."""

    tokens: np.ndarray
    lengths: np.ndarray


def filter_logits(logits_BxV: Array, sampling: Sampling) -> Array:
    """Logits / temperature with the tokens outside top-k and top-p set to -inf."""
    logits = logits_BxV.astype(jnp.float32) / max(sampling.temperature, 1e-6)
    if sampling.top_k is not None and sampling.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        sorted_desc = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        # A token is kept when the mass strictly before it is below p: the most likely one always.
        before = jnp.cumsum(probs, axis=-1) - probs
        num_kept = jnp.sum(before < sampling.top_p, axis=-1, keepdims=True)
        threshold = jnp.take_along_axis(sorted_desc, num_kept - 1, axis=-1)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def choose(logits_BxV: Array, rng: Array, sampling: Sampling) -> Array:
    """The next token of each row: argmax when greedy, else a draw from the filtered logits."""
    if sampling.temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits_BxV, sampling)).astype(jnp.int32)


StepFn = Callable[[Any, Array], tuple[Array, Any]]  # (cache, tokens [B, L]) -> (last logits, cache)


def _decode_loop(step: StepFn, cache: Any, seq_BxT: Array, lengths_B: Array, logits_BxV: Array,
                 start: int, max_new_tokens: int, rng: Array, sampling: Sampling,
                 eos_id: int | None) -> tuple[Array, Array]:
    """Fills seq from position `start` on; `logits` predict position `start`. Returns the
    continuations [B, max_new_tokens] and their lengths."""
    batch, total = seq_BxT.shape

    def cond(state):
        t, _, _, done, _, _ = state
        return (t < total) & ~jnp.all(done)

    def body(state):
        t, seq, cache, done, count, logits = state
        sampled = choose(logits, jax.random.fold_in(rng, t), sampling)
        in_prompt = t < lengths_B
        prompt_token = jax.lax.dynamic_index_in_dim(seq, t, axis=1, keepdims=False)
        token = jnp.where(in_prompt, prompt_token, jnp.where(done, PAD_ID, sampled))
        seq = jax.lax.dynamic_update_slice(seq, token[:, None], (0, t))
        generated = ~in_prompt & ~done
        count = count + generated
        finished = count >= max_new_tokens
        if eos_id is not None:
            finished |= token == eos_id
        done = done | (generated & finished)
        logits, cache = step(cache, token[:, None])
        return t + 1, seq, cache, done, count, logits

    init = (jnp.asarray(start, jnp.int32), seq_BxT, cache, jnp.zeros((batch,), jnp.bool_),
            jnp.zeros((batch,), jnp.int32), logits_BxV)
    _, seq, _, _, count, _ = jax.lax.while_loop(cond, body, init)
    index = lengths_B[:, None] + jnp.arange(max_new_tokens)[None, :]
    return jnp.take_along_axis(seq, index, axis=1), count


@functools.partial(jax.jit, static_argnames=("model", "prefill", "max_new_tokens", "sampling",
                                             "eos_id"))
def _sample_decoder(model, params, seq_BxT, lengths_B, rng, *, prefill: int, max_new_tokens: int,
                    sampling: Sampling, eos_id: int | None):
    def step(cache, tokens):
        logits, mutated = model.apply({"params": params, "cache": cache},
                                      {"decoder_input_tokens": tokens}, decode=True,
                                      mutable=["cache"])
        return logits[:, -1], mutated["cache"]

    cache = init_decode_cache(model, seq_BxT.shape[0], seq_BxT.shape[1])
    logits, cache = step(cache, seq_BxT[:, :prefill])
    return _decode_loop(step, cache, seq_BxT, lengths_B, logits, prefill, max_new_tokens, rng,
                        sampling, eos_id)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "sampling", "eos_id"))
def _sample_encoder_decoder(model, params, encoder_BxS, rng, *, max_new_tokens: int,
                            sampling: Sampling, eos_id: int | None):
    batch = encoder_BxS.shape[0]
    encoded = model.apply({"params": params}, {"encoder_input_tokens": encoder_BxS},
                          method=model.encode)

    def step(cache, tokens, encoded=None):
        # encoder_input_tokens only gives the cross-attention its padding mask; `encoded` is
        # passed on the first step alone, when cross-attention caches its keys and values.
        features = {"encoder_input_tokens": encoder_BxS, "decoder_input_tokens": tokens}
        logits, mutated = model.apply({"params": params, "cache": cache}, features, encoded,
                                      decode=True, mutable=["cache"], method=model.decode)
        return logits[:, -1], mutated["cache"]

    seq = jnp.zeros((batch, 1 + max_new_tokens), jnp.int32)  # BOS = pad (0), as in training
    cache = init_decode_cache(model, batch, seq.shape[1], encoder_BxS.shape[1])
    logits, cache = step(cache, seq[:, :1], encoded)
    return _decode_loop(step, cache, seq, jnp.ones((batch,), jnp.int32), logits, 1,
                        max_new_tokens, rng, sampling, eos_id)


def pad_right(rows: Sequence[Sequence[int]], length: int | None = None) -> np.ndarray:
    """Token lists -> int32 [len(rows), length] padded with 0 on the right."""
    length = max(len(r) for r in rows) if length is None else length
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _check_common(model: Any, rows: Sequence[Sequence[int]], family: str,
                  max_new_tokens: int) -> None:
    if model.cfg.family != family:
        raise ValueError(f"This function decodes a {family} model; the model is "
                         f"{model.cfg.family}.")
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("Every prompt needs at least one token.")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} is invalid: expected >= 1.")


def sample(model: Any, params: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
           temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
           seed: int = 0, eos_id: int | None = EOS_ID, bos_id: int | None = PAD_ID) -> Generated:
    """Continues each prompt (token ids, any lengths) with a decoder-only model's KV cache.

    temperature 0 is greedy; sampling is a pure function of `seed`. A row stops at `eos_id`
    (None: never) or after `max_new_tokens`.
    """
    prompts = [([] if bos_id is None else [bos_id]) + [int(t) for t in p] for p in prompts]
    _check_common(model, prompts, "decoder", max_new_tokens)
    lengths = np.array([len(p) for p in prompts], np.int32)
    seq = pad_right(prompts, int(lengths.max()) + max_new_tokens)
    tokens, count = _sample_decoder(
        model, params, jnp.asarray(seq), jnp.asarray(lengths), jax.random.key(seed),
        prefill=int(lengths.min()), max_new_tokens=max_new_tokens,
        sampling=Sampling(float(temperature), top_k, top_p), eos_id=eos_id)
    return Generated(np.asarray(tokens), np.asarray(count))


def generate_encoder_decoder(model: Any, params: Any, inputs: Sequence[Sequence[int]], *,
                             max_new_tokens: int, temperature: float = 0.0,
                             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                             eos_id: int | None = EOS_ID) -> Generated:
    """Decodes a T5-style model: each input (token ids as in training, usually ending with EOS)
    is encoded once; the decoder starts from BOS (0) and reads cached cross-attention keys."""
    inputs = [[int(t) for t in r] for r in inputs]
    _check_common(model, inputs, "encoder_decoder", max_new_tokens)
    tokens, count = _sample_encoder_decoder(
        model, params, jnp.asarray(pad_right(inputs)), jax.random.key(seed),
        max_new_tokens=max_new_tokens, sampling=Sampling(float(temperature), top_k, top_p),
        eos_id=eos_id)
    return Generated(np.asarray(tokens), np.asarray(count))


# ------------------------------------------------------------------------------ text and filling


def encode_text(vocab: Any, text: str) -> list[int]:
    """Token ids of text in which `<extra_id_N>` and `[MASK]` stand for the sentinel and mask ids
    (vocab.encode treats them as plain text); no EOS."""
    ids: list[int] = []
    pos = 0
    for match in MARKER_RE.finditer(text):
        if match.start() > pos:
            ids += vocab.encode(text[pos:match.start()])
        ids.append(vocab.mask_id if match.group(1) is None
                   else vocab.sentinel_id(int(match.group(1))))
        pos = match.end()
    if pos < len(text):
        ids += vocab.encode(text[pos:])
    return ids


@dataclasses.dataclass
class SpanFill:
    """One input's filled spans: {sentinel index: text}, the input with them filled in, and the
    raw decoder output as text."""

    spans: dict[int, str]
    text: str
    output: str


def parse_spans(tokens: Sequence[int], vocab: Any) -> dict[int, list[int]]:
    """Decoder output `<extra_id_0> a b <extra_id_1> c ... EOS` -> {0: [a, b], 1: [c]}.

    Tokens before the first sentinel belong to no span and are dropped; a repeated sentinel
    keeps its first span (later ones are the model losing track).
    """
    index_of = {sid: i for i, sid in enumerate(vocab.sentinel_ids)}
    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for token in tokens:
        token = int(token)
        if token in (vocab.eos_id, vocab.pad_id):
            break
        if token in index_of:
            current = [] if index_of[token] in spans else spans.setdefault(index_of[token], [])
        elif current is not None:
            current.append(token)
    return spans


def fill_spans(model: Any, params: Any, text_with_sentinels: str | Sequence[str], vocab: Any, *,
               max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
               top_p: float | None = None, seed: int = 0,
               prefix_ids: Sequence[int] = ()) -> SpanFill | list[SpanFill]:
    """Fills the `<extra_id_N>` spans of text with a span-corruption encoder-decoder model.

    The input is encoded as in training (sentinels in place of spans, EOS at the end); the decoder
    output is parsed into spans, and each sentinel of the input replaced by its span's text (a span
    the model did not produce is left empty). A list of texts is decoded as one batch.
    `prefix_ids` go before every input (UL2's mode token [NLU]).
    """
    texts = [text_with_sentinels] if isinstance(text_with_sentinels, str) else text_with_sentinels
    inputs = [[*prefix_ids, *encode_text(vocab, t), vocab.eos_id] for t in texts]
    out = generate_encoder_decoder(model, params, inputs, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                   eos_id=vocab.eos_id)
    fills = []
    for text, tokens, length in zip(texts, out.tokens, out.lengths):
        spans = {i: vocab.decode(ids) for i, ids in parse_spans(tokens[:length], vocab).items()}
        filled = MARKER_RE.sub(lambda m: spans.get(int(m.group(1)), "") if m.group(1) is not None
                               else m.group(0), text)
        fills.append(SpanFill(spans, filled, vocab.decode(tokens[:length])))
    return fills[0] if isinstance(text_with_sentinels, str) else fills


@dataclasses.dataclass
class MaskFill:
    """Predictions at one row's mask positions: positions [M], ids and probs [M, top_k] (most
    likely first), and the row with each mask replaced by its most likely token."""

    positions: np.ndarray
    ids: np.ndarray
    probs: np.ndarray
    filled: np.ndarray


@functools.partial(jax.jit, static_argnames=("model", "top_k"))
def _mask_predictions(model, params, tokens_BxL, *, top_k: int):
    probs = jax.nn.softmax(model.apply({"params": params}, {"encoder_input_tokens": tokens_BxL}))
    return jax.lax.top_k(probs, top_k)


def fill_masks(model: Any, params: Any, tokens_with_mask: Sequence[Sequence[int]], *,
               mask_id: int, top_k: int = 1) -> list[MaskFill]:
    """The top-k tokens (argmax for top_k=1) at each `mask_id` position of an MLM encoder's input,
    one MaskFill per row; rows of different lengths are padded with 0, which the encoder ignores."""
    if model.cfg.family != "encoder":
        raise ValueError(f"fill_masks needs an encoder (MLM) model; the model is "
                         f"{model.cfg.family}.")
    if top_k < 1:
        raise ValueError(f"top_k={top_k} is invalid: expected >= 1.")
    rows = [[int(t) for t in r] for r in tokens_with_mask]
    probs, ids = _mask_predictions(model, params, jnp.asarray(pad_right(rows)), top_k=top_k)
    probs, ids = np.asarray(probs), np.asarray(ids)
    fills = []
    for b, row in enumerate(rows):
        row = np.asarray(row, np.int32)
        positions = np.flatnonzero(row == mask_id)
        filled = row.copy()
        filled[positions] = ids[b, positions, 0]
        fills.append(MaskFill(positions, ids[b, positions], probs[b, positions], filled))
    return fills

