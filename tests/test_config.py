"""The run configuration."""

import pytest

from jaxlm import config as config_lib


def test_default_config_validates_to_the_tiny_decoder():
    cfg = config_lib.validate(config_lib.get_config())
    assert (cfg.family, cfg.d_model) == ("decoder", 64)


def test_command_line_style_overrides_reach_the_model():
    config = config_lib.get_config()
    config.model.preset = "t5_v1_1_small"
    config.model.family = None
    config.model.dropout_rate = 0.1
    cfg = config_lib.validate(config)
    assert (cfg.family, cfg.num_layers, cfg.dropout_rate) == ("encoder_decoder", 8, 0.1)


def test_every_model_field_is_in_the_config():
    from jaxlm.models.config import FIELDS
    assert set(FIELDS) <= set(config_lib.get_config().model.keys())


@pytest.mark.parametrize("section,field,value,match", [
    ("model", "d_model", 66, r"model\.d_model=66"),
    ("model", "position", "alibi", r"model\.position='alibi'"),
    ("mesh", "data", 0, r"mesh\.data=0"),
])
def test_invalid_values_name_the_field(section, field, value, match):
    config = config_lib.get_config()
    config[section][field] = value
    with pytest.raises(ValueError, match=match):
        config_lib.validate(config)
