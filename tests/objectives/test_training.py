"""The objectives added beside the five classic ones train on the offline corpus: on one device
and on the (2, 2, 2) mesh of 8 fake devices with the same losses, and resume exactly (the
trainer's own acceptance checks, run on each of them)."""

import json
import os

import pytest

from jaxlm import trainer
from tests import test_trainer
from tests.test_trainer import quiet, tiny_config

NEW_OBJECTIVES = ["bart", "deshuffle", "hybrid", "nsp"]


@pytest.mark.parametrize("objective", NEW_OBJECTIVES)
def test_one_device_and_a_2x2x2_mesh_train_alike(corpus_dir, tmp_path, objective):
    test_trainer.test_one_device_and_a_2x2x2_mesh_train_alike(corpus_dir, tmp_path, objective)


@pytest.mark.parametrize("objective", NEW_OBJECTIVES)
def test_resuming_continues_exactly(corpus_dir, tmp_path, objective):
    test_trainer.test_resuming_continues_exactly(corpus_dir, tmp_path, objective)


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
