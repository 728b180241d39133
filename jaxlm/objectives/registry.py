"""The one table of objectives: name -> function, model family, feature streams, lengths, packing.

A config names an objective (`OBJECTIVES`); on each model family it supports, the objective runs
as one *form* (a function in `FORMS`): prefix LM is `prefix_lm` on a decoder and
`prefix_lm_encoder_decoder` on an encoder-decoder. The first family listed is the objective's
natural one (what `model.family=None` trains). A new objective is one module with its function
and a line in each table below; the pipeline, the config checks and the comparison read them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxlm.conventions import FAMILIES
from jaxlm.objectives import denoising, lm, masking, mixtures
# Functions, not modules: the package exports functions of these modules' own names.
from jaxlm.objectives.bart import bart, bart_vocab_kwargs
from jaxlm.objectives.deshuffle import deshuffle
from jaxlm.objectives.hybrid import hybrid
from jaxlm.objectives.nsp import nsp, nsp_stream_lengths, nsp_vocab_kwargs
from jaxlm.objectives.common import (
    Features,
    Lengths,
    eos_vocab_kwargs,
    no_vocab_kwargs,
    pair_lengths,
    same_lengths,
)

PACKINGS = ("concat", "greedy", "none")


@dataclasses.dataclass(frozen=True)
class Form:
    """One objective function as the pipeline runs it.

    features: its outputs; a key's stream is its prefix ('encoder_...', 'decoder_...').
    lengths: (seq_len, kwargs) -> (raw tokens per example, {stream: row length}), streams in order.
    packing: the default packing ('concat' where the output length is fixed by the chunk,
      'greedy' where it varies: see jaxlm/data/layout.py).
    adds_eos: the function ends its outputs with EOS itself (greedy documents get none).
    vocab_kwargs: vocabulary -> the keyword arguments the function takes from it.
    model: architecture fields (jaxlm.models.ModelConfig) the features need, as (field, value)
      pairs, applied where the config leaves them unset (NSP's token types and classifier).
    other_documents: the function takes `others`, documents that are not its own first
      document (NSP's NotNext segments; the pipeline draws one per example,
      jaxlm/data/negatives.py).
    batch_fn: the same function on a batch of equally long rows, `(tokens [B, n], seeds [B],
      **kwargs) -> features [B, ...]`, row i identical to `fn(tokens[i], seed=seeds[i])`; the
      concat pipeline calls it once per batch instead of `fn` once per row.
    """

    fn: Callable[..., Features]
    family: str
    features: tuple[str, ...]
    lengths: Lengths
    packing: str
    adds_eos: bool
    vocab_kwargs: Callable[[Any], dict[str, Any]]
    model: tuple[tuple[str, Any], ...] = ()
    other_documents: bool = False
    batch_fn: Callable[..., Features] | None = None


_DECODER = ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights")
_ENCODER = ("encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights")
_ENC_DEC = ("encoder_input_tokens", *_DECODER)

FORMS: dict[str, Form] = {
    "clm": Form(
        fn=lm.clm, family="decoder", features=_DECODER, lengths=same_lengths("decoder"),
        packing="concat", adds_eos=False, vocab_kwargs=no_vocab_kwargs, batch_fn=lm.clm_batch),
    "mlm": Form(
        fn=masking.mlm, family="encoder", features=_ENCODER, lengths=same_lengths("encoder"),
        packing="concat", adds_eos=False, vocab_kwargs=masking.mlm_vocab_kwargs),
    "span_corruption": Form(
        fn=denoising.span_corruption, family="encoder_decoder", features=_ENC_DEC,
        lengths=denoising.span_corruption_stream_lengths, packing="concat", adds_eos=True,
        vocab_kwargs=denoising.span_corruption_vocab_kwargs,
        batch_fn=denoising.span_corruption_batch),
    "prefix_lm": Form(
        fn=lm.prefix_lm, family="decoder", features=(*_DECODER, "decoder_causal_attention"),
        lengths=same_lengths("decoder"), packing="greedy", adds_eos=False,
        vocab_kwargs=eos_vocab_kwargs),
    # The encoder-decoder form of prefix LM, for encoder-decoder models.
    "prefix_lm_encoder_decoder": Form(
        fn=lm.prefix_lm_encoder_decoder, family="encoder_decoder", features=_ENC_DEC,
        lengths=pair_lengths, packing="greedy", adds_eos=True, vocab_kwargs=eos_vocab_kwargs),
    # The encoder-decoder form of MLM (T5's "BERT-style").
    "mlm_encoder_decoder": Form(
        fn=masking.mlm_encoder_decoder, family="encoder_decoder", features=_ENC_DEC,
        lengths=pair_lengths, packing="concat", adds_eos=True,
        vocab_kwargs=masking.mlm_vocab_kwargs),
    "ul2": Form(
        fn=mixtures.ul2, family="encoder_decoder", features=_ENC_DEC,
        lengths=mixtures.ul2_stream_lengths, packing="greedy", adds_eos=True,
        vocab_kwargs=mixtures.ul2_vocab_kwargs),
    "bart": Form(
        fn=bart, family="encoder_decoder", features=_ENC_DEC, lengths=pair_lengths,
        packing="concat", adds_eos=True, vocab_kwargs=bart_vocab_kwargs),
    "deshuffle": Form(
        fn=deshuffle, family="encoder_decoder", features=_ENC_DEC,
        lengths=pair_lengths, packing="concat", adds_eos=True, vocab_kwargs=eos_vocab_kwargs),
    "hybrid": Form(
        fn=hybrid, family="decoder", features=(*_DECODER, "decoder_causal_attention"),
        lengths=same_lengths("decoder"), packing="concat", adds_eos=False,
        vocab_kwargs=masking.mlm_vocab_kwargs),
    # Windows of two rows: the pair fills one; the window's other documents and those of the
    # rest of the batch supply NotNext segments.
    "nsp": Form(
        fn=nsp, family="encoder",
        features=(*_ENCODER, "encoder_token_types", "encoder_nsp_labels", "encoder_nsp_weights"),
        lengths=nsp_stream_lengths, packing="concat", adds_eos=False,
        vocab_kwargs=nsp_vocab_kwargs, model=(("num_token_types", 2), ("classifier_classes", 2)),
        other_documents=True),
}

# The objectives a config may name (config.objective): family -> form, natural family first.
FAMILY_FORMS: dict[str, dict[str, str]] = {
    "clm": {"decoder": "clm"},
    "mlm": {"encoder": "mlm", "encoder_decoder": "mlm_encoder_decoder"},
    "span_corruption": {"encoder_decoder": "span_corruption"},
    "prefix_lm": {"decoder": "prefix_lm", "encoder_decoder": "prefix_lm_encoder_decoder"},
    "ul2": {"encoder_decoder": "ul2"},
    "bart": {"encoder_decoder": "bart"},
    "deshuffle": {"encoder_decoder": "deshuffle"},
    "hybrid": {"decoder": "hybrid"},
    "nsp": {"encoder": "nsp"},
}
OBJECTIVES = tuple(FAMILY_FORMS)
NATURAL_FAMILY = {name: next(iter(forms)) for name, forms in FAMILY_FORMS.items()}
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {name: f.features for name, f in FORMS.items()}


def families(objective: str) -> tuple[str, ...]:
    """The model families `objective` can train, natural first."""
    return tuple(FAMILY_FORMS[objective])


def form_name(objective: str, family: str) -> str:
    """The form `objective` runs as on `family`; a ValueError names what is valid."""
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is unknown; valid families: {list(FAMILIES)}")
    if objective not in FAMILY_FORMS:
        raise ValueError(f"unknown objective {objective!r}; valid names: {list(FAMILY_FORMS)}")
    forms = FAMILY_FORMS[objective]
    if family not in forms:
        raise ValueError(
            f"objective {objective!r} needs the model family "
            f"{' or '.join(repr(f) for f in forms)}, got family {family!r}"
        )
    return forms[family]


def model_defaults(objective: str, family: str) -> dict[str, Any]:
    """The architecture fields `objective` needs on `family` (none if it cannot train it)."""
    form = FAMILY_FORMS.get(objective, {}).get(family)
    return dict(FORMS[form].model) if form else {}


def objective_vocab_kwargs(name: str, vocab: Any) -> dict[str, Any]:
    """The keyword arguments form `name` takes from `vocab` (mask, mode and EOS ids, ...)."""
    return FORMS[name].vocab_kwargs(vocab)


def _form(name: str) -> Form:
    if name not in FORMS:
        raise ValueError(f"unknown objective {name!r}; valid names: {sorted(FORMS)}")
    return FORMS[name]


def get_objective(name: str, **kwargs: Any) -> Callable[..., Features]:
    """`fn(tokens, seed) -> features` with `kwargs` bound; arguments are checked here, eagerly.
    A form with `other_documents` also takes `fn(tokens, seed, others=[...])`."""
    fn = _form(name).fn
    seeded = "seed" in inspect.signature(fn).parameters
    if "seed" in kwargs or "tokens" in kwargs:
        raise ValueError(f"objective {name!r}: tokens and seed are call arguments, not kwargs")

    def bound(tokens: np.ndarray, seed: int, **context: Any) -> Features:
        return fn(tokens, seed=seed, **kwargs, **context) if seeded else fn(tokens, **kwargs)

    # One call on an empty sequence runs every argument check of the objective now, so a bad
    # config fails before any pipeline is built (and missing / unknown kwargs are caught too).
    try:
        bound(np.zeros(0, np.int32), 0)
    except TypeError as e:
        raise ValueError(f"objective {name!r}: {e}") from None
    return bound


def get_batch_objective(name: str, **kwargs: Any) -> Callable[..., Features] | None:
    """`fn(tokens [B, n], seeds [B]) -> features [B, ...]` with `kwargs` bound, for forms that
    run on a batch (`Form.batch_fn`); None for the others. Check kwargs with `get_objective`."""
    batch_fn = _form(name).batch_fn
    if batch_fn is None:
        return None

    def bound(tokens: np.ndarray, seeds: np.ndarray) -> Features:
        return batch_fn(tokens, seeds, **kwargs)

    return bound


def tf_objective_fn(
    name: str, output_keys: Sequence[str] | None = None, **kwargs: Any
) -> Callable[[Any, Any], dict[str, Any]]:
    """The objective as a `dataset.map` function `(tokens int32 [None], seed int64 []) -> dict`.

    Wraps the same numpy function in `tf.numpy_function`, so pipeline examples are bit-identical
    to the numpy ones for the same seeds. output_keys defaults to all of the objective's features.
    """
    from jaxlm.data.tfcompat import import_tf  # lazy: only the tf.data pipeline needs it

    tf = import_tf()
    fn = get_objective(name, **kwargs)
    keys = tuple(OUTPUT_KEYS[name] if output_keys is None else output_keys)
    unknown = [k for k in keys if k not in OUTPUT_KEYS[name]]
    if unknown or not keys:
        raise ValueError(
            f"output_keys {list(keys)} for objective {name!r} must be a non-empty subset of "
            f"{list(OUTPUT_KEYS[name])}"
        )

    def np_fn(tokens: np.ndarray, seed: np.ndarray) -> list[np.ndarray]:
        features = fn(tokens, int(seed))
        return [features[k] for k in keys]

    def map_fn(tokens: Any, seed: Any) -> dict[str, Any]:
        values = tf.numpy_function(
            np_fn,
            [tf.cast(tokens, tf.int32), tf.cast(seed, tf.int64)],
            [tf.int32] * len(keys),
            stateful=False,  # a pure function of its inputs: tf.data may cache / reorder freely
        )
        out = {}
        for k, v in zip(keys, values):
            v.set_shape([None])
            out[k] = v
        return out

    return map_fn
