"""metrics.jsonl, TensorBoard events, MFU and the progress line."""

import glob
import json
import logging
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
    assert metrics.peak_flops_per_device(jax.devices()[0]) >= peak  # the best timing stands


class FakeDevice:
    """A device of a given platform and kind (jax's own devices are read-only)."""

    def __init__(self, platform, device_kind):
        self.platform, self.device_kind = platform, device_kind


def test_the_peak_is_timed_after_the_warm_up():
    """A call that runs 10x slower for its first 0.1 s (a process's first matmuls run at about
    half speed) is timed at its fast speed."""
    import time

    start = time.perf_counter()

    def call():
        slow = time.perf_counter() - start < 0.1
        time.sleep(0.01 if slow else 0.001)

    assert metrics.best_time_after_warmup(call, 0.1) < 0.005


def test_peak_table_override_and_unknown_kinds(caplog, monkeypatch):
    monkeypatch.setattr(metrics, "_unknown_kinds_logged", set())
    v3 = FakeDevice("tpu", "TPU v3")
    with caplog.at_level(logging.WARNING, logger="jaxlm.metrics"):
        assert metrics.peak_flops_per_device(v3) is None
        assert metrics.mesh_peak_flops([v3] * 8) is None
    assert [r.getMessage() for r in caplog.records] == [
        "MFU n/a (unknown peak for TPU v3; set train.peak_flops)"]  # once per kind
    assert metrics.mesh_peak_flops([v3] * 8, override=4.5e13) == 8 * 4.5e13
    assert metrics.mesh_peak_flops([FakeDevice("tpu", "TPU v4")] * 4) == 4 * 275e12
    assert metrics.mesh_peak_flops([FakeDevice("gpu", "NVIDIA H100 80GB HBM3")]) == 989e12
    assert metrics.peak_flops_per_device(FakeDevice("tpu", "TPU v4"), override=1e12) == 1e12
    # The fake CPU devices share one host: its peak counts once. It is timed at every call, and
    # the best timing so far stands (a slow one was disturbed by other work on the host).
    assert metrics.mesh_peak_flops(jax.devices(), 1e11) == 1e11
    timed = iter([3e11, 2e11, 4e11])
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda: next(timed))
    monkeypatch.setattr(metrics, "_best_cpu_peak", None)
    assert len(jax.devices()) > 1
    assert [metrics.mesh_peak_flops(jax.devices()) for _ in range(3)] == [3e11, 3e11, 4e11]


@pytest.mark.parametrize("peak_flops", [None, 1e9])
def test_an_unknown_device_kind_trains_without_mfu(corpus_dir, tmp_path, monkeypatch, caplog,
                                                   peak_flops):
    from jaxlm import trainer

    from .test_trainer import tiny_config

    real = metrics.mesh_peak_flops
    monkeypatch.setattr(metrics, "mesh_peak_flops", lambda devices, override=None: real(
        [FakeDevice("tpu", "TPU v2")] * 8, override))
    monkeypatch.setattr(metrics, "_unknown_kinds_logged", set())
    config = tiny_config(corpus_dir, **{"train.steps": 2, "checkpoint.every_steps": 2,
                                        "train.peak_flops": peak_flops})
    with caplog.at_level(logging.WARNING, logger="jaxlm.metrics"):
        summary = trainer.train(config, str(tmp_path), say=lambda line: None)
    assert summary.final_step == 2
    train = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [r for r in train if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(r["tokens_per_second"] > 0 for r in train)
    logged = [r.getMessage() for r in caplog.records if r.name == "jaxlm.metrics"]
    if peak_flops is None:
        assert all("mfu" not in r and "peak_flops" not in r for r in train)
        assert logged == ["MFU n/a (unknown peak for TPU v2; set train.peak_flops)"]
    else:
        assert all(r["mfu"] > 0 for r in train) and not logged
        # The peak MFU divides by is recorded once, in the first record.
        assert [r.get("peak_flops") for r in train] == [8 * peak_flops, None]


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
