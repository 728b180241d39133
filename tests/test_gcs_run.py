"""experiments/pretrain.py with `--workdir=gs://...` on the Cloud Storage emulator (tests/gcs.py).

The data stays a local TFDS folder: TensorFlow's GCS client cannot be pointed at an emulator
(tests/test_io.py checks that), so a gs:// data_dir is tested only as the string TFDS receives.
"""

import json
import os
import subprocess
import sys

import numpy as np

from jaxlm import io
from jaxlm.data.sources import DataConfig
from tests.xla import script_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "pretrain.py")
TINY = ["--num_cpu_devices=1", "--config.model.preset=tiny", "--config.train.batch_size=8",
        "--config.data.seq_len=64", "--config.train.log_every=1",
        "--config.data.shuffle_buffer=128", "--config.data.window=64",
        "--config.train.eval_batches=1", "--config.checkpoint.every_steps=1000"]


def pretrain(workdir: str, corpus_dir: str, steps: int, cwd: str) -> str:
    """Runs pretrain.py in `cwd` (relative paths would land there); returns its stdout."""
    env = script_environment()  # with the emulator's variables, set by the gcs_endpoint fixture
    result = subprocess.run(
        [sys.executable, SCRIPT, f"--workdir={workdir}", f"--config.data.data_dir={corpus_dir}",
         f"--config.train.steps={steps}", *TINY],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def train_losses(workdir: str) -> dict[int, float]:
    records = [json.loads(line) for line in io.read_text(io.join(workdir, "metrics.jsonl"))
               .splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def test_gs_data_dir_reaches_tfds_unchanged(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert DataConfig(data_dir="gs://b/tfds").resolved_data_dir == "gs://b/tfds"
    assert DataConfig(data_dir="tfds").resolved_data_dir == str(tmp_path / "tfds")


def test_pretrain_on_gcs_writes_the_bucket_and_resumes_past_an_unfinished_save(
        gcs_bucket, corpus_dir, tmp_path) -> None:
    workdir = io.join(gcs_bucket, "runs", "x")
    pretrain(workdir, corpus_dir, steps=2, cwd=str(tmp_path))

    assert {"config.json", "metrics.jsonl", "checkpoints", "train", "eval"} <= set(
        io.listdir(workdir))
    assert json.loads(io.read_text(io.join(workdir, "config.json")))["train"]["steps"] == 2
    assert io.listdir(io.join(workdir, "checkpoints")) == ["2"]
    assert io.exists(io.join(workdir, "checkpoints", "2", "commit_success.txt"))
    for split in ("train", "eval"):
        events = io.glob(workdir, f"{split}/events.out.tfevents.*")
        assert len(events) == 1 and len(io.read_bytes(events[0])) > 100, events
    assert sorted(train_losses(workdir)) == [1, 2]

    # A save cut short: step 3 written in part, without Orbax's commit_success.txt.
    io.write_text(io.join(workdir, "checkpoints", "3", "state", "_METADATA"), "{")
    out = pretrain(workdir, corpus_dir, steps=4, cwd=str(tmp_path))
    assert "resumed from step 2" in out, out[-2000:]
    assert "4" in io.listdir(io.join(workdir, "checkpoints"))

    straight = str(tmp_path / "straight")
    pretrain(straight, corpus_dir, steps=4, cwd=str(tmp_path))
    resumed, expected = train_losses(workdir), train_losses(straight)
    # Both runs' lines are kept, in order: the object is rewritten whole, never appended to.
    steps = [json.loads(line)["step"] for line in io.read_text(
        io.join(workdir, "metrics.jsonl")).splitlines() if '"split": "train"' in line]
    assert steps == [1, 2, 3, 4]
    np.testing.assert_allclose([resumed[s] for s in (3, 4)], [expected[s] for s in (3, 4)],
                               rtol=1e-5)
    # No URI was taken for a local path (os.path.abspath would make `<cwd>/gs:/...`).
    assert not [d for d, _, _ in os.walk(tmp_path) if os.path.basename(d) == "gs:"]
