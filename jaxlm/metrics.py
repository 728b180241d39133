"""Run metrics: metrics.jsonl, TensorBoard events, a console progress line, and MFU.

Only process 0 writes. MFU is model FLOPs per second (jaxlm.flops) over the devices' peak: a
table of published dense bf16 peaks for accelerators, and on CPU the best float32 matmul timed
so far in the process (timed again at the start of every run: a timing taken while other work
ran on the host understates the peak and would overstate MFU, so the best one stands);
`train.peak_flops` overrides both. A device kind the table lacks trains without MFU.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxlm import io
from jaxlm.prefetch import BackgroundWriter

# Dense bf16 peak FLOP/s per chip, from the vendors' spec sheets, matched on device_kind.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
}

_best_cpu_peak: float | None = None  # the best CPU matmul timed in this process
_unknown_kinds_logged: set[str] = set()
log = logging.getLogger(__name__)


def best_time_after_warmup(call: Callable[[], Any], seconds: float) -> float:
    """The fastest of the calls timed over `seconds`, after `seconds` of untimed warm-up."""
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < 2 * seconds or best == float("inf"):
        begin = time.perf_counter()
        call()
        if begin - start >= seconds:  # past the warm-up
            best = min(best, time.perf_counter() - begin)
    return best


def measure_matmul_peak(size: int = 1024, seconds: float = 0.5) -> float:
    """FLOP/s of a float32 [size, size] matmul on the default device: the CPU's practical peak.

    The first calls of a process run at about half speed (thread pools starting, pages first
    touched); a peak taken from them doubled the MFU it divides, hence the warm-up.
    """
    x = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    return 2 * size ** 3 / best_time_after_warmup(lambda: matmul(x).block_until_ready(), seconds)


def peak_flops_per_device(device: jax.Device | None = None,
                          override: float | None = None) -> float | None:
    """The device's peak FLOP/s: `override` (train.peak_flops) if given, else the table for
    accelerators or, on CPU, a matmul timed now (~1 s) or an earlier one of this process if that
    was faster (see the module docstring); None, logged once per kind, for a device kind the
    table lacks (TPU v2 / v3, L4, A10, ...)."""
    global _best_cpu_peak
    if override is not None:
        return float(override)
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        _best_cpu_peak = max(measure_matmul_peak(), _best_cpu_peak or 0.0)
        return _best_cpu_peak
    for kind, peak in PEAK_FLOPS.items():
        if kind.lower() in device.device_kind.lower():
            return peak
    if device.device_kind not in _unknown_kinds_logged:
        _unknown_kinds_logged.add(device.device_kind)
        log.warning("MFU n/a (unknown peak for %s; set train.peak_flops)", device.device_kind)
    return None


def mesh_peak_flops(devices: Any, override: float | None = None) -> float | None:
    """The combined peak FLOP/s of a mesh's devices (a numpy array or sequence of them), or None
    when unknown. On CPU the fake devices share one host, whose peak counts once."""
    flat = list(getattr(devices, "flat", devices))
    peak = peak_flops_per_device(flat[0], override)
    if peak is None:
        return None
    return peak * (1 if flat[0].platform == "cpu" else len(flat))


def mfu(flops_per_step: float, seconds_per_step: float, num_devices: int,
        peak_per_device: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the devices' combined peak."""
    return flops_per_step / seconds_per_step / (num_devices * peak_per_device)


def read_metrics(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (those of `split` if given), [] if it has none."""
    path = io.join(workdir, "metrics.jsonl")
    if not io.exists(path):
        return []
    records = [json.loads(line) for line in io.read_text(path).splitlines() if line]
    return [r for r in records if split is None or r["split"] == split]


class MetricsWriter:
    """Appends one JSON object per logged step to metrics.jsonl and mirrors scalars to
    TensorBoard, on a background thread (the loop never waits for a file); a no-op on every
    process but 0. `close()` writes what is queued.

    `workdir` may be a `gs://` URI. Cloud Storage objects cannot be appended to, so there the
    writer keeps every line (a resumed run's earlier ones included) and uploads metrics.jsonl
    whole at each write; TensorBoard events are written to a local temporary folder and the
    changed event file is uploaded through jaxlm.io after each flush, the same route as every
    other file (TensorFlow's own GCS client cannot be pointed at an emulator, so it is untested).
    """

    def __init__(self, workdir: str, enabled: bool | None = None) -> None:
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._background = None
        if self.enabled:
            self._jsonl = _JsonLines(io.join(workdir, "metrics.jsonl"))
            self._events = _EventFolders(workdir, ("train", "eval"))
            self._background = BackgroundWriter(self._write, "jaxlm-metrics")

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        if self.enabled:
            record = {"step": int(step), "split": split}
            record.update({k: _plain(v) for k, v in metrics.items()})
            self._background.submit(record)

    def _write(self, record: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(record) + "\n")
        self._events.write(record["split"], record["step"],
                           {k: v for k, v in record.items()
                            if k not in ("step", "split") and isinstance(v, (int, float))})

    def close(self) -> None:
        if self.enabled:
            try:
                self._background.close()
            finally:
                self._jsonl.close()
                self._events.close()


class _JsonLines:
    """A JSON-lines file: appended to locally; on a URI rewritten whole with every line so far
    (an upload per write, of the whole file: fine for a log line per `log_every` steps)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._file = None
        self._text = ""
        if io.is_uri(path):
            if io.exists(path):  # a resumed run keeps the lines of the runs before it
                self._text = io.read_text(path)
        else:
            io.makedirs(io.path(path).parent)
            self._file = io.open(path, "a")

    def write(self, line: str) -> None:
        if self._file is None:
            self._text += line
            io.write_text(self._path, self._text)
        else:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _EventFolders:
    """TensorBoard writers of `workdir/<split>`; for a URI workdir, local folders mirrored to it."""

    def __init__(self, workdir: str, splits: tuple[str, ...]) -> None:
        from jaxlm.data.tfcompat import import_tf  # TensorFlow with every accelerator hidden

        self._tf = import_tf()
        self._workdir = workdir
        self._local = tempfile.TemporaryDirectory(prefix="jaxlm-events-") if io.is_uri(
            workdir) else None
        root = self._local.name if self._local else io.join(workdir)
        self._dirs = {split: os.path.join(root, split) for split in splits}
        self._writers = {split: self._tf.summary.create_file_writer(d)
                         for split, d in self._dirs.items()}

    def write(self, split: str, step: int, scalars: Mapping[str, float]) -> None:
        writer = self._writers[split]
        with writer.as_default():
            for key, value in scalars.items():
                self._tf.summary.scalar(key, value, step=step)
        writer.flush()
        self._upload(split)

    def _upload(self, split: str) -> None:
        if self._local is None:
            return
        for name in sorted(os.listdir(self._dirs[split])):
            with open(os.path.join(self._dirs[split], name), "rb") as f:
                io.write_bytes(io.join(self._workdir, split, name), f.read())

    def close(self) -> None:
        try:
            for split, writer in self._writers.items():
                writer.close()
                if os.path.isdir(self._dirs[split]):
                    self._upload(split)
        finally:
            if self._local is not None:
                self._local.cleanup()


def _plain(value: Any) -> Any:
    """JSON-serialisable Python scalars from numpy / jax scalars."""
    if hasattr(value, "item"):
        return value.item()
    return value


def progress_line(step: int, total_steps: int, metrics: Mapping[str, Any],
                  elapsed_seconds: float, start_step: int = 0) -> str:
    """`step 120/1000 | loss 3.412 | acc 0.412 | 51.2k tok/s | MFU 47.1% | ETA 12m03s`."""
    parts = [f"step {step}/{total_steps}"]
    if "loss" in metrics:
        parts.append(f"loss {float(metrics['loss']):.4f}")
    if "accuracy" in metrics:
        parts.append(f"acc {float(metrics['accuracy']):.3f}")
    if "tokens_per_second" in metrics:
        parts.append(f"{float(metrics['tokens_per_second']) / 1e3:.1f}k tok/s")
    if "mfu" in metrics:
        parts.append(f"MFU {100 * float(metrics['mfu']):.1f}%")
    done = step - start_step
    if done > 0 and elapsed_seconds > 0:
        remaining = elapsed_seconds / done * (total_steps - step)
        parts.append(f"ETA {int(remaining // 60)}m{int(remaining % 60):02d}s")
    return " | ".join(parts)
