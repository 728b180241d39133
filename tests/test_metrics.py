"""metrics.jsonl, TensorBoard events, MFU and the progress line."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from jaxlm import metrics


def test_jsonl_and_tensorboard_events(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path), enabled=True)
    writer.write(1, "train", {"loss": np.float32(2.5), "accuracy": 0.25, "learning_rate": 1e-3})
    writer.write(10, "eval", {"loss": 2.0})
    writer.close()
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert lines == [{"step": 1, "split": "train", "loss": 2.5, "accuracy": 0.25,
                      "learning_rate": 1e-3}, {"step": 10, "split": "eval", "loss": 2.0}]
    assert glob.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*"))
    assert glob.glob(os.path.join(tmp_path, "eval", "events.out.tfevents.*"))


def test_disabled_writer_writes_nothing(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path / "run"), enabled=False)
    writer.write(1, "train", {"loss": 1.0})
    writer.close()
    assert not os.path.exists(tmp_path / "run")


def test_mfu_and_measured_cpu_peak():
    assert metrics.mfu(1e12, 2.0, 4, 1e11) == pytest.approx(1.25)
    peak = metrics.peak_flops_per_device(jax.devices()[0])
    assert 1e8 < peak < 1e14  # a CPU, measured
    assert metrics.peak_flops_per_device(jax.devices()[0]) == peak  # measured once


def _fields(line):
    """{name: value} of a progress line's ' | '-separated fields."""
    parts = line.split(" | ")
    fields = {"step": parts[0].removeprefix("step ")}
    for part in parts[1:]:
        if part.endswith(" tok/s"):
            fields["tok/s"] = part.removesuffix(" tok/s")
        else:
            name, value = part.split(" ", 1)
            fields[name] = value
    return fields


def test_progress_line():
    line = metrics.progress_line(120, 1000, {"loss": 3.41234, "accuracy": 0.4, "mfu": 0.471,
                                             "tokens_per_second": 51234.0}, 60.0, start_step=0)
    fields = _fields(line)
    assert set(fields) == {"step", "loss", "acc", "tok/s", "MFU", "ETA"}
    assert fields["step"] == "120/1000"
    assert float(fields["loss"]) == pytest.approx(3.41234, abs=1e-4)
    assert float(fields["acc"]) == pytest.approx(0.4)
    assert float(fields["tok/s"].removesuffix("k")) * 1e3 == pytest.approx(51234.0, rel=1e-3)
    assert float(fields["MFU"].removesuffix("%")) == pytest.approx(47.1)
    # 60 s for 120 steps: 880 more steps take 440 s.
    minutes, seconds = fields["ETA"].removesuffix("s").split("m")
    assert 60 * int(minutes) + int(seconds) == 440


def test_progress_line_leaves_out_what_it_does_not_have():
    fields = _fields(metrics.progress_line(5, 10, {"loss": 1.0}, 0.0, start_step=5))
    assert set(fields) == {"step", "loss"} and fields["step"] == "5/10"
