"""The GPU-scale comparison config: its arms, their matching and its budget, without training."""

import jax
import pytest

from jaxlm import compare, compare_eval
from jaxlm import config as config_lib
from jaxlm.models import build_model, init_params, param_count
from tests.test_experiment_configs import load

H100_BF16_PEAK = 989e12  # FLOP/s, dense
MFU = 0.40
PRETRAINING_SECONDS = 7 * 60  # of the ~10 minutes; the rest is the evaluation
MIN_STEPS = 1000


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    """(config, arms, {arm name: (steps, text tokens per step, FLOPs per step)})."""
    module = load("compare_gpu")
    c = module.get_config()
    arms = compare.plan(c)  # raises when the parameter counts differ by more than 10%
    workdir = str(tmp_path_factory.mktemp("compare_gpu"))
    c.data.dataset, c.data.data_dir = compare_eval.pretraining_dataset(c.data, workdir)
    return c, arms, {a.name: compare.steps_for(c, a, seed=0) for a in arms}


def test_the_gpu_config_documents_its_launch_and_plans_the_five_arms(sized):
    c, arms, _ = sized
    doc = load("compare_gpu").__doc__
    for part in ("compare_objectives.py", "--config=experiments/configs/compare_gpu.py",
                 "--workdir=runs/compare_gpu"):
        assert part in doc
    assert "NOT run" in doc
    assert [a.objective for a in arms] == list(compare.DEFAULT_OBJECTIVES)
    assert {a.family for a in arms} == {"decoder", "encoder", "encoder_decoder"}
    assert c.model.dtype == "bfloat16" and not c.num_cpu_devices
    assert c.pretrain.budget == "flops"


def test_the_arms_are_matched_within_ten_percent_at_about_25m_parameters(sized):
    c, arms, _ = sized
    counts = {}
    for arm in arms:  # the models as trained: the subword vocabulary's embedding included
        cfg = config_lib.resolve(compare.pretrain_config(c, arm, 0, 1)).model
        assert cfg.vocab_size == c.data.vocab_size
        shapes = jax.eval_shape(lambda cfg=cfg: init_params(build_model(cfg), jax.random.key(0)))
        counts[arm.name] = param_count(shapes)
    assert max(counts.values()) <= (1 + c.max_param_mismatch) * min(counts.values())
    assert 20e6 <= min(counts.values()) and max(counts.values()) <= 30e6


def test_the_budget_fits_the_gpu_minutes_with_enough_steps_per_arm(sized):
    c, arms, steps = sized
    total = 0.0
    for arm in arms:
        n, _, flops_per_step = steps[arm.name]
        assert n >= MIN_STEPS, arm.name
        assert abs(n * flops_per_step - c.pretrain.flops) <= flops_per_step / 2  # the same FLOPs
        total += n * flops_per_step
    seconds = total / (MFU * H100_BF16_PEAK)
    assert 0.8 * PRETRAINING_SECONDS <= seconds <= PRETRAINING_SECONDS
