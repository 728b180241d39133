"""experiments/pretrain.py as a user runs it: config errors, SIGTERM, several processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.xla import script_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "pretrain.py")
TINY = ["--config.model.preset=tiny", "--config.train.batch_size=8", "--config.data.seq_len=64",
        "--config.train.log_every=1", "--config.data.shuffle_buffer=128",
        "--config.data.window=64", "--config.train.eval_batches=2"]


def command(workdir, corpus_dir, *flags, devices=1):
    return [sys.executable, SCRIPT, f"--workdir={workdir}", f"--num_cpu_devices={devices}",
            f"--config.data.data_dir={corpus_dir}", *TINY, *flags]


def environment():
    return script_environment()  # the device count comes from --num_cpu_devices


def train_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == "train"]


@pytest.mark.parametrize("flag,field", [
    ("--config.objective=bert", "objective='bert'"),
    ("--config.mesh.data=3", "mesh"),
    ("--config.data.dataset=no_such_dataset", "data.dataset='no_such_dataset'"),
])
def test_config_errors_are_one_line_without_traceback(tmp_path, corpus_dir, flag, field):
    result = subprocess.run(command(str(tmp_path / "w"), corpus_dir, flag), env=environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert field in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_sigterm_saves_the_current_step_and_a_rerun_continues(tmp_path, corpus_dir):
    workdir = str(tmp_path / "run")
    flags = ["--config.train.steps=100000", "--config.checkpoint.every_steps=100000"]
    process = subprocess.Popen(command(workdir, corpus_dir, *flags), env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).readlines()) >= 3:
            break
        time.sleep(0.5)
    assert process.poll() is None, process.stdout.read()[-3000:]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)  # a hang guard, not a speed check
    assert process.returncode == 143, output[-3000:]
    from jaxlm.checkpoint import Checkpointer

    saved = Checkpointer(workdir).latest_step()
    assert saved == max(r["step"] for r in train_records(workdir))
    result = subprocess.run(command(workdir, corpus_dir, f"--config.train.steps={saved + 2}"),
                            env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [r["step"] for r in train_records(workdir)]
    assert steps[-2:] == [saved + 1, saved + 2] and f"resumed from step {saved}" in result.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one_process_with_two_devices(tmp_path, corpus_dir):
    flags = ["--config.train.steps=4", "--config.mesh.data=2"]
    single = str(tmp_path / "single")
    result = subprocess.run(command(single, corpus_dir, *flags, devices=2), env=environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    multi = str(tmp_path / "multi")
    address = f"localhost:{_free_port()}"
    processes = [subprocess.Popen(
        command(multi, corpus_dir, *flags, f"--coordinator_address={address}",
                "--num_processes=2", f"--process_id={i}"),
        env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    a = {r["step"]: r["loss"] for r in train_records(single)}
    b = {r["step"]: r["loss"] for r in train_records(multi)}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    np.testing.assert_allclose([b[s] for s in a], list(a.values()), rtol=1e-4)
