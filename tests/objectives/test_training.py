"""The objectives added beside the five classic ones train on the offline corpus: on one device
and on the (2, 2, 2) mesh of 8 fake devices with the same losses, and resume exactly."""

import json
import os

import jax
import numpy as np
import pytest

from jaxlm import trainer
from jaxlm.checkpoint import Checkpointer
from tests.test_trainer import quiet, tiny_config, train_losses

NEW_OBJECTIVES = ["bart", "deshuffle", "hybrid", "nsp"]


@pytest.mark.parametrize("objective", NEW_OBJECTIVES)
def test_one_device_and_a_2x2x2_mesh_train_alike(corpus_dir, tmp_path, objective):
    one = str(tmp_path / "one")
    trainer.train(tiny_config(corpus_dir, objective, **{"mesh.data": 1}), one,
                  devices=jax.devices()[:1], say=quiet)
    meshed = str(tmp_path / "meshed")
    trainer.train(tiny_config(corpus_dir, objective, **{
        "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}), meshed, say=quiet)
    a, b = train_losses(one), train_losses(meshed)
    assert sorted(a) == list(range(1, 7)) and a[6] < a[1]
    np.testing.assert_allclose([b[s] for s in a], list(a.values()), rtol=1e-3)


@pytest.mark.parametrize("objective", NEW_OBJECTIVES)
def test_resuming_continues_exactly(corpus_dir, tmp_path, objective):
    straight = str(tmp_path / "straight")
    trainer.train(tiny_config(corpus_dir, objective, **{"train.steps": 12}), straight, say=quiet)
    resumed = str(tmp_path / "resumed")
    trainer.train(tiny_config(corpus_dir, objective), resumed, say=quiet)
    assert Checkpointer(resumed).all_steps() == [6]
    summary = trainer.train(tiny_config(corpus_dir, objective, **{"train.steps": 12}), resumed,
                            say=quiet)
    assert (summary.start_step, summary.final_step) == (6, 12)
    a, b = train_losses(straight), train_losses(resumed)
    np.testing.assert_allclose([b[s] for s in range(7, 13)], [a[s] for s in range(7, 13)],
                               rtol=1e-5)


def test_nsp_logs_its_loss_and_accuracy_apart(corpus_dir, tmp_path):
    workdir = str(tmp_path / "nsp")
    summary = trainer.train(tiny_config(corpus_dir, "nsp", **{"train.steps": 2}), workdir,
                            say=quiet)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    for split in ("train", "eval"):
        last = [r for r in records if r["split"] == split][-1]
        assert last["nsp_loss"] > 0 and 0 <= last["nsp_accuracy"] <= 1
        assert last["nsp_loss"] != last["loss"]
    assert summary.eval["nsp_loss"] > 0
