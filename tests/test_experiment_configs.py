"""Every experiment config file loads and validates, at every size."""

import importlib.util
import os

import pytest

from jaxlm import compare
from jaxlm import config as config_lib

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "experiments", "configs")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("objective", ["clm", "mlm", "span_corruption", "prefix_lm", "ul2"])
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_objective_configs_resolve(objective, size):
    module = load(objective)
    assert module.__doc__.lstrip().splitlines()[0] and "Launch" in module.__doc__
    run = config_lib.resolve(module.get_config(size))
    assert run.objective == objective
    assert run.model.family == config_lib.NATURAL_FAMILY[objective]
    if size != "tiny":
        assert run.data.shards == -1 and run.model.dtype == "bfloat16"


def test_the_t5_scale_comparison_config_plans_its_arms():
    arms = compare.plan(load("compare_t5_scale").get_config())
    assert {a.family for a in arms} == {"encoder_decoder"}
    assert [a.objective for a in arms] == ["mlm", "span_corruption", "prefix_lm", "ul2"]
