"""The new objectives' experiment configs and config options: every size resolves, bad option
values fail with one line naming the field, and the comparison accepts the objectives."""

import pytest

from jaxlm import compare
from jaxlm import config as config_lib
from tests.test_experiment_configs import load


@pytest.mark.parametrize("objective", ["bart", "deshuffle", "hybrid", "nsp"])
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_objective_configs_resolve(objective, size):
    module = load(objective)
    assert "Launch" in module.__doc__ and "Expected:" in module.__doc__
    run = config_lib.resolve(module.get_config(size))
    assert run.objective == objective
    assert run.model.family == config_lib.NATURAL_FAMILY[objective]


@pytest.mark.parametrize("objective, field, value", [
    ("bart", "poisson_lambda", 0.0),
    ("bart", "poisson_lambda", -1.0),
    ("bart", "mask_ratio", 0.0),
    ("bart", "mask_ratio", 1.0),
    ("bart", "random_ratio", 1.5),
    ("hybrid", "causal_fraction", -0.1),
    ("hybrid", "causal_fraction", 1.5),
    ("hybrid", "mask_rate", 1.0),
    ("nsp", "mask_rate", 0.0),
])
def test_bad_options_name_their_field(objective, field, value):
    config = config_lib.get_config()
    config.objective = objective
    config.objectives[objective][field] = value
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.resolve(config)
    message = str(error.value)
    assert message.startswith(f"objectives.{objective}.{field}={value!r} is invalid")
    assert "\n" not in message


def test_the_edges_of_causal_fraction_are_valid():
    for value in (0.0, 1.0):
        config = config_lib.get_config()
        config.objective = "hybrid"
        config.objectives.hybrid.causal_fraction = value
        assert config_lib.resolve(config).objective_options["causal_fraction"] == value


def test_the_comparison_accepts_the_new_objectives():
    c = compare.get_config()
    c.objectives = "clm,mlm,span_corruption,bart,hybrid"
    arms = compare.plan(c)
    assert [(a.objective, a.family) for a in arms] == [
        ("clm", "decoder"), ("mlm", "encoder"), ("span_corruption", "encoder_decoder"),
        ("bart", "encoder_decoder"), ("hybrid", "decoder")]
    c.objectives = "deshuffle,nsp"
    assert [a.family for a in compare.plan(c)] == ["encoder_decoder", "encoder"]
    c.same_architecture = True
    c.objectives = "bart,deshuffle"
    assert {a.family for a in compare.plan(c)} == {"encoder_decoder"}
