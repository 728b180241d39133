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


def test_mesh_rules_default_to_the_sharding_table_and_take_overrides():
    from jaxlm import sharding

    config = config_lib.get_config()
    run = config_lib.resolve(config)
    assert (run.rules, run.dcn) == (sharding.DEFAULT_RULES, (1, 1))
    config.mesh.rules = "heads=,mlp=fsdp+tensor"  # as --config.mesh.rules=heads=,mlp=fsdp+tensor
    rules = dict(config_lib.resolve(config).rules)
    assert (rules["heads"], rules["mlp"], rules["embed"]) == (None, ("fsdp", "tensor"), "fsdp")


def test_adafactor_settings_and_peak_flops_reach_the_typed_config():
    config = config_lib.get_config()
    config.optim.name = "adafactor"
    config.optim.adafactor.decay_rate = 0.9
    config.optim.adafactor.momentum = 0.9
    config.train.peak_flops = 1.2e14
    run = config_lib.resolve(config)
    assert (run.optim.adafactor.decay_rate, run.optim.adafactor.momentum) == (0.9, 0.9)
    assert run.optim.adafactor.multiply_by_parameter_scale  # T5's default kept
    assert run.train.peak_flops == 1.2e14


@pytest.mark.parametrize("changes,match", [
    ({"mesh.rules": "heads=tensor,hidden=fsdp"},
     r"^mesh\.rules='heads=tensor,hidden=fsdp' is invalid: unknown logical axis 'hidden'; "
     r"expected one of: activation_batch, .*, relpos_buckets$"),
    ({"mesh.rules": "embed=model"},
     r"^mesh\.rules='embed=model' is invalid at 'embed=model': unknown mesh axis 'model'; "
     r"expected one of: data, fsdp, tensor"),
    ({"mesh.dcn_data": 0}, r"mesh\.dcn_data=0 is invalid: expected a positive number"),
    ({"mesh.data": 4, "mesh.dcn_data": 3}, r"mesh\.dcn_data=3 .*a divisor of mesh\.data=4"),
    ({"mesh.fsdp": 2, "mesh.dcn_fsdp": 4}, r"mesh\.dcn_fsdp=4 .*a divisor of mesh\.fsdp=2"),
    ({"optim.adafactor.decay_rate": 1.5}, r"optim\.adafactor\.decay_rate=1\.5"),
    ({"train.peak_flops": -1.0}, r"train\.peak_flops=-1\.0"),
])
def test_invalid_mesh_optim_and_peak_values_name_the_field(changes, match):
    config = config_lib.get_config()
    for key, value in changes.items():
        section, _, field = key.rpartition(".")
        target = config
        for part in section.split("."):
            target = target[part]
        target[field] = value
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.resolve(config)
