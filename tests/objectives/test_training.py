"""The objectives added beside the five classic ones train on the offline corpus: on one device
and on the (2, 2, 2) mesh of 8 fake devices with the same losses, and resume exactly (the
trainer's own acceptance checks, run on each of them)."""

import json
import os

import numpy as np
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


def test_nsp_micro_batches_equal_the_whole_batch(corpus_dir, tmp_path):
    # The NSP term is scaled by the whole batch's weights, so accumulation changes nothing.
    runs = {}
    for micro in (1, 4):
        workdir = str(tmp_path / f"micro{micro}")
        trainer.train(tiny_config(corpus_dir, "nsp", **{"train.steps": 3,
                                                        "train.micro_batches": micro}),
                      workdir, say=quiet)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            runs[micro] = [json.loads(line) for line in f if '"train"' in line]
    for key in ("loss", "nsp_loss", "nsp_accuracy"):
        np.testing.assert_allclose([r[key] for r in runs[4]], [r[key] for r in runs[1]],
                                   rtol=1e-5, atol=1e-7)
