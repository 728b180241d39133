"""The training loop on the offline corpus: mesh invariance, exact resume, restore onto other
meshes, accumulation, divergence, no implicit transfers. The CLI's own checks (config errors,
SIGTERM, several processes) are in test_pretrain_cli.py."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxlm import config as config_lib
from jaxlm import trainer
from jaxlm.checkpoint import Checkpointer


def tiny_config(corpus_dir, objective="clm", /, **overrides):
    """The acceptance setting: tiny preset, batch 8, seq_len 64, logging every step."""
    config = config_lib.get_config()
    config.objective = objective
    config.data.data_dir = corpus_dir
    config.data.seq_len = 64
    config.data.shuffle_buffer = 128
    config.data.window = 64
    config.train.batch_size = 8
    config.train.log_every = 1
    config.train.steps = 6
    config.train.eval_batches = 2
    config.train.eval_every = 0
    config.optim.learning_rate = 3e-3
    config.optim.warmup_steps = 2
    config.checkpoint.every_steps = 6
    config.checkpoint.async_save = True
    for key, value in overrides.items():
        section, _, field = key.rpartition(".")
        target = config
        for part in section.split(".") if section else []:
            target = target[part]
        target[field] = value
    return config


def train_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def quiet(line):
    del line


@pytest.mark.parametrize("objective", ["clm", "mlm", "span_corruption", "prefix_lm"])
def test_one_device_and_a_2x2x2_mesh_train_alike(corpus_dir, tmp_path, objective):
    one = str(tmp_path / "one")
    trainer.train(tiny_config(corpus_dir, objective, **{"mesh.data": 1}), one,
                  devices=jax.devices()[:1], say=quiet)
    meshed = str(tmp_path / "meshed")
    summary = trainer.train(tiny_config(corpus_dir, objective, **{
        "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}), meshed, say=quiet)
    a, b = train_losses(one), train_losses(meshed)
    assert sorted(a) == list(range(1, 7)) and a[6] < a[1]
    np.testing.assert_allclose([b[s] for s in a], list(a.values()), rtol=1e-3)
    assert summary.final_step == 6 and summary.eval["loss"] > 0
    saved = json.load(open(os.path.join(meshed, "config.json")))
    assert saved["model"]["family"] == config_lib.NATURAL_FAMILY[objective]
    assert saved["model"]["d_model"] == 64 and saved["optim"]["total_steps"] == 6


@pytest.mark.parametrize("objective", ["clm", "span_corruption"])
def test_resuming_continues_exactly(corpus_dir, tmp_path, objective):
    straight = str(tmp_path / "straight")
    trainer.train(tiny_config(corpus_dir, objective, **{"train.steps": 12}), straight,
                  say=quiet)
    resumed = str(tmp_path / "resumed")
    trainer.train(tiny_config(corpus_dir, objective), resumed, say=quiet)
    assert Checkpointer(resumed).all_steps() == [6]
    summary = trainer.train(tiny_config(corpus_dir, objective, **{"train.steps": 12}), resumed,
                            say=quiet)
    assert (summary.start_step, summary.final_step) == (6, 12)
    a, b = train_losses(straight), train_losses(resumed)
    np.testing.assert_allclose([b[s] for s in range(7, 13)], [a[s] for s in range(7, 13)],
                               rtol=1e-5)


def test_a_2x2x2_checkpoint_restores_onto_other_meshes(corpus_dir, tmp_path):
    source = str(tmp_path / "source")
    trainer.train(tiny_config(corpus_dir, **{"mesh.fsdp": 2, "mesh.tensor": 2,
                                             "mesh.data": 2}), source, say=quiet)
    next_losses = {}
    for name, mesh, devices in [("one", (1, 1, 1), jax.devices()[:1]),
                                ("data4_fsdp2", (4, 2, 1), None),
                                ("same", (2, 2, 2), None)]:
        workdir = str(tmp_path / name)
        shutil.copytree(os.path.join(source, "checkpoints"), os.path.join(workdir, "checkpoints"))
        config = tiny_config(corpus_dir, **{"train.steps": 7, "mesh.data": mesh[0],
                                            "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]})
        summary = trainer.train(config, workdir, devices=devices, say=quiet)
        assert summary.start_step == 6
        next_losses[name] = train_losses(workdir)[7]
    np.testing.assert_allclose(list(next_losses.values()), next_losses["same"], rtol=1e-4)


def test_four_micro_batches_equal_the_whole_batch(corpus_dir, tmp_path):
    whole, micro = str(tmp_path / "whole"), str(tmp_path / "micro")
    trainer.train(tiny_config(corpus_dir, **{"train.steps": 3}), whole, say=quiet)
    trainer.train(tiny_config(corpus_dir, **{"train.steps": 3, "train.micro_batches": 4}),
                  micro, say=quiet)
    a, b = train_losses(whole), train_losses(micro)
    np.testing.assert_allclose([b[s] for s in (1, 2, 3)], [a[s] for s in (1, 2, 3)], rtol=1e-5)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(corpus_dir, tmp_path):
    workdir = str(tmp_path / "nan")
    trainer.train(tiny_config(corpus_dir, **{"checkpoint.every_steps": 3}), workdir, say=quiet)
    assert Checkpointer(workdir).all_steps() == [3, 6]
    # A learning rate this large overflows the weights within a few steps.
    config = tiny_config(corpus_dir, **{"train.steps": 30, "checkpoint.every_steps": 3,
                                        "optim.learning_rate": 1e30})
    with pytest.raises(trainer.TrainingDiverged, match="step"):
        trainer.train(config, workdir, say=quiet)
    steps = Checkpointer(workdir).all_steps()
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    bad = [r["step"] for r in records if r["split"] == "train"
           and not (np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]))]
    assert len(bad) == 1 and bad[0] > 6  # logged, then stopped at once
    assert max(steps) < bad[0], (steps, bad)


def test_the_loop_makes_no_implicit_transfers(corpus_dir, tmp_path):
    config = tiny_config(corpus_dir, **{"train.steps": 4, "train.eval_every": 2})
    summary = trainer.train(config, str(tmp_path / "guarded"), say=quiet,
                            loop_transfer_guard="disallow")
    assert summary.final_step == 4


def test_the_host_reads_metrics_only_on_log_save_and_eval_steps(corpus_dir, tmp_path,
                                                                 monkeypatch):
    reads = []
    real_device_get = jax.device_get

    def counting_device_get(tree):
        if isinstance(tree, dict) and "grad_norm" in tree:  # a train step's metrics
            reads.append(tree)
        return real_device_get(tree)

    monkeypatch.setattr(trainer.jax, "device_get", counting_device_get)
    config = tiny_config(corpus_dir, **{"train.steps": 9, "train.log_every": 3,
                                        "checkpoint.every_steps": 100})
    trainer.train(config, str(tmp_path / "async"), say=quiet)
    assert len(reads) == 3  # steps 3, 6 and 9; the six others are never waited for
    assert sorted(train_losses(str(tmp_path / "async"))) == [3, 6, 9]


@pytest.mark.parametrize("key,value,field", [
    ("objective", "bert", "objective='bert'"),
    ("model.d_model", 66, "model.d_model=66"),
    ("mesh.data", 3, "mesh"),
    ("data.dataset", "no_such_dataset", "data.dataset='no_such_dataset'"),
    ("optim.learning_rate", -1.0, "optim.learning_rate=-1.0"),
    ("data.seq_len", 0, "data.seq_len=0"),
    ("objectives.span_corruption.noise_density", 1.5,
     "objectives.span_corruption.noise_density=1.5"),
])
def test_invalid_configs_name_the_field(corpus_dir, key, value, field):
    config = tiny_config(corpus_dir, "span_corruption", **{key: value})
    with pytest.raises(config_lib.ConfigError) as error:
        trainer.setup(config)
    assert field in str(error.value)
