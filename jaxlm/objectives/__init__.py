"""Pretraining objectives as pure-numpy batch transforms.

Each objective turns ONE 1-D int32 token array (already tokenized, no EOS) and an int seed into a
dict of named int32 1-D features with the seqio / T5X names:

  clm              decoder_{input,target}_tokens, decoder_loss_weights            (lm.py)
  mlm              encoder_{input,target}_tokens, encoder_loss_weights (BERT)     (masking.py)
  span_corruption  encoder_input_tokens, decoder_{input,target}_tokens, ... (T5)  (denoising.py)
  prefix_lm        decoder-only: decoder_* + decoder_causal_attention (T5X)       (lm.py)
  ul2              encoder-decoder mixture of denoisers with a mode token (UL2)   (mixtures.py)
  bart             text infilling + sentence permutation, encoder-decoder (BART) (bart.py)
  deshuffle        unshuffle the tokens, encoder-decoder (T5 baseline)           (deshuffle.py)
  hybrid           causal or masked next-token prediction, decoder (GPT-BERT)    (hybrid.py)
  nsp              MLM + next-sentence prediction on [CLS] A [SEP] B [SEP] (BERT) (nsp.py)

`registry.py` is the table of them: function, model family, features, lengths, default packing.

Conventions (T5, `jaxlm.conventions`): pad 0, eos 1, unk 2; sentinel i is `vocab_size - 1 - i`;
decoder_input_tokens is the target stream shifted right by one with 0 as the start token. Outputs
are NOT padded: their lengths follow the input length (and, for span corruption / UL2, the noise
arithmetic); the data pipeline pads or packs them to the model's lengths.

Randomness comes only from (stream, example seed): `np.random.default_rng` seeded inside each
call, or counter-based keys where an objective also runs on a whole batch (`get_batch_objective`),
so an example is a pure function of its tokens and seed: identical in numpy, in tf.data
(`tf_objective_fn`), alone or in a batch, across hosts and after a restart. Nothing here imports
jax or tensorflow at module level.
"""

from jaxlm.conventions import EOS_ID, NUM_SENTINELS, PAD_ID, UNK_ID
from jaxlm.objectives.bart import (
    bart,
    infilling_spans,
    poisson_span_lengths,
    sentence_ends,
    shuffle_sentences,
    split_sentences,
)
from jaxlm.objectives.common import Features, shift_right
from jaxlm.objectives.denoising import (
    random_spans_noise_mask,
    random_spans_noise_masks,
    span_corruption,
    span_corruption_batch,
    span_corruption_lengths,
    span_corruption_max_lengths,
)
from jaxlm.objectives.deshuffle import deshuffle
from jaxlm.objectives.hybrid import hybrid, hybrid_is_causal
from jaxlm.objectives.lm import clm, clm_batch, prefix_lm, prefix_lm_encoder_decoder
from jaxlm.objectives.masking import mlm, mlm_encoder_decoder
from jaxlm.objectives.mixtures import (
    DEFAULT_UL2_DENOISERS,
    UL2_MODES,
    Denoiser,
    ul2,
    ul2_choose_denoiser,
)
from jaxlm.objectives.nsp import documents, nsp, nsp_pair
from jaxlm.objectives.registry import (
    FAMILY_FORMS,
    FORMS,
    NATURAL_FAMILY,
    OBJECTIVES,
    OUTPUT_KEYS,
    PACKINGS,
    Form,
    families,
    form_name,
    get_batch_objective,
    get_objective,
    model_defaults,
    objective_vocab_kwargs,
    tf_objective_fn,
)

__all__ = [
    "DEFAULT_UL2_DENOISERS", "Denoiser", "EOS_ID", "FAMILY_FORMS", "FORMS", "Features", "Form",
    "NATURAL_FAMILY", "NUM_SENTINELS", "OBJECTIVES", "OUTPUT_KEYS", "PACKINGS", "PAD_ID",
    "UL2_MODES", "UNK_ID", "bart", "clm", "clm_batch", "deshuffle", "documents", "families",
    "form_name", "get_batch_objective", "get_objective", "hybrid", "hybrid_is_causal",
    "infilling_spans", "mlm", "mlm_encoder_decoder", "model_defaults", "nsp", "nsp_pair",
    "objective_vocab_kwargs", "poisson_span_lengths", "prefix_lm", "prefix_lm_encoder_decoder",
    "random_spans_noise_mask", "random_spans_noise_masks", "sentence_ends", "shift_right",
    "shuffle_sentences", "span_corruption", "span_corruption_batch", "span_corruption_lengths",
    "span_corruption_max_lengths", "split_sentences", "tf_objective_fn", "ul2",
    "ul2_choose_denoiser",
]
