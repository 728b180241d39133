"""What the pipeline builds for one (objective, family, seq_len, packing, vocabulary): the form of
the objective that runs, its kwargs, the raw tokens per example and the rows' streams and lengths.

Everything per objective comes from the table in jaxlm/objectives/registry.py (L = seq_len):

  objective        family           default packing  raw tokens per example  encoder  decoder
  clm              decoder          concat           L                       -        L
  mlm              encoder          concat           L                       L        -
  span_corruption  encoder_decoder  concat           span_corruption_lengths(L)[0]  L  targets
  prefix_lm        decoder          greedy           L                       -        L
  prefix_lm        encoder_decoder  greedy           L - 1  (prefix_lm_encoder_decoder)  L  L
  mlm              encoder_decoder  concat           L - 1  (mlm_encoder_decoder)        L  L
  ul2              encoder_decoder  greedy           L - 2  (mode token + EOS)           L  >= L
  bart             encoder_decoder  concat           L - 1  (+ EOS)                      L  L
  deshuffle        encoder_decoder  concat           L - 1  (+ EOS)                      L  L
  hybrid           decoder          concat           L                       -        L
  nsp              encoder          concat           2L (A, B and NotNext text)  L    -

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
NSP (`other_documents`) also reads one other document per example, drawn by the example's seed
from the whole split (jaxlm/data/negatives.py): its NotNext segments.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlm import objectives as obj
from jaxlm.objectives import PACKINGS


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

    @functools.cached_property
    def batch_objective_fn(self) -> Any:  # None where the objective runs one row at a time
        return obj.get_batch_objective(self.objective, **self.kwargs)

    @property
    def other_documents(self) -> bool:  # the objective reads a drawn other document (NSP)
        return obj.FORMS[self.objective].other_documents


def check_choices(
    objective: str, family: str, seq_len: int, packing: str = "auto"
) -> tuple[str, str]:
    """(form, packing) of a valid (objective, family, seq_len, packing); a ValueError otherwise.

    Needs no vocabulary, so a pipeline checks this before it trains or loads one.
    """
    name = obj.form_name(objective, family)
    if packing == "auto":
        packing = obj.FORMS[name].packing
    if packing not in PACKINGS:
        raise ValueError(f"packing {packing!r} is unknown; valid: ['auto', {', '.join(PACKINGS)}]")
    if not isinstance(seq_len, (int, np.integer)) or seq_len < 8:
        raise ValueError(f"seq_len={seq_len!r} is invalid: expected an int >= 8")
    return name, packing


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
    name, packing = check_choices(objective, family, seq_len, packing)
    form = obj.FORMS[name]
    kwargs = {**obj.objective_vocab_kwargs(name, vocab), **dict(objective_kwargs or {})}
    obj.get_objective(name, **kwargs)  # validates the kwargs eagerly
    raw, streams = form.lengths(int(seq_len), kwargs)
    return Layout(
        objective=name,
        kwargs=kwargs,
        family=family,
        packing=packing,
        raw_len=raw,
        streams=tuple(
            Stream(p, n, tuple(k for k in form.features if k.startswith(p)))
            for p, n in streams.items()
        ),
        append_eos=packing == "concat" or not form.adds_eos,
    )
