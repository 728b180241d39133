"""Tests for jaxlm.data.layout: form, lengths, packing and features per objective and family."""

import pytest

from jaxlm.data.layout import check_choices, resolve_layout
from jaxlm.objectives import span_corruption_lengths

from ._util import BYTE

ENC_DEC = ("encoder_input_tokens", "decoder_target_tokens", "decoder_input_tokens",
           "decoder_loss_weights")
PACKED_ENC_DEC = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions",
                  "decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                  "decoder_segment_ids", "decoder_positions")

# (objective, family) -> (form, packing, raw length, lengths, EOS appended, features) at seq_len 64
TABLE = {
    ("clm", "decoder"): ("clm", "concat", 64, {"decoder": 64}, True,
                         ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights")),
    ("mlm", "encoder"): ("mlm", "concat", 64, {"encoder": 64}, True,
                         ("encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights")),
    ("mlm", "encoder_decoder"): ("mlm_encoder_decoder", "concat", 63,
                                 {"encoder": 64, "decoder": 64}, True, ENC_DEC),
    ("span_corruption", "encoder_decoder"): ("span_corruption", "concat", 70,
                                             {"encoder": 64, "decoder": 14}, True, ENC_DEC),
    ("prefix_lm", "decoder"): ("prefix_lm", "greedy", 64, {"decoder": 64}, True,
                               ("decoder_target_tokens", "decoder_input_tokens",
                                "decoder_loss_weights", "decoder_causal_attention",
                                "decoder_segment_ids", "decoder_positions")),
    ("prefix_lm", "encoder_decoder"): ("prefix_lm_encoder_decoder", "greedy", 63,
                                       {"encoder": 64, "decoder": 64}, False, PACKED_ENC_DEC),
    ("ul2", "encoder_decoder"): ("ul2", "greedy", 62, {"encoder": 64, "decoder": 64}, False,
                                 PACKED_ENC_DEC),
}


@pytest.mark.parametrize("objective,family", list(TABLE))
def test_layout_per_objective_and_family(objective, family):
    layout = resolve_layout(objective, family, 64, BYTE)
    assert (layout.objective, layout.packing, layout.raw_len, layout.lengths, layout.append_eos,
            layout.feature_keys) == TABLE[objective, family]
    assert layout.family == family
    assert check_choices(objective, family, 64) == (layout.objective, layout.packing)


def test_t5_reference_lengths_and_packing_override():
    layout = resolve_layout("span_corruption", "encoder_decoder", 512, BYTE)
    assert (layout.raw_len, layout.lengths) == (568, {"encoder": 512, "decoder": 114})
    greedy = resolve_layout("mlm", "encoder", 64, BYTE, packing="greedy")
    assert greedy.packed and greedy.feature_keys[-2:] == ("encoder_segment_ids",
                                                          "encoder_positions")
    # The vocabulary fills the objective's ids; user kwargs override the defaults.
    ul2 = resolve_layout("ul2", "encoder_decoder", 64, BYTE)
    assert ul2.kwargs["mode_ids"] == BYTE.mode_ids and ul2.kwargs["eos_id"] == BYTE.eos_id
    dense = resolve_layout("span_corruption", "encoder_decoder", 64, BYTE,
                           objective_kwargs={"noise_density": 0.5})
    # Denser noise: more raw tokens fit 64 corrupted inputs (T5's arithmetic at that density).
    assert dense.raw_len == span_corruption_lengths(64, 0.5)[0] > 70
    assert dense.kwargs["noise_density"] == 0.5


@pytest.mark.parametrize("args,message", [
    (("clm", "decoderish", 64), "model family 'decoderish' is unknown"),
    (("electra", "decoder", 64), "unknown objective 'electra'"),
    (("span_corruption", "decoder", 64), "'span_corruption' needs the model family "
                                         "'encoder_decoder', got family 'decoder'"),
    (("prefix_lm", "encoder", 64), "'prefix_lm' needs the model family 'decoder' or "
                                   "'encoder_decoder'"),
    (("clm", "decoder", 4), "seq_len=4 is invalid"),
    (("clm", "decoder", 64, "zip"), "packing 'zip' is unknown"),
])
def test_invalid_choices_are_refused_without_a_vocabulary(args, message):
    with pytest.raises(ValueError, match=message):
        check_choices(*args)
