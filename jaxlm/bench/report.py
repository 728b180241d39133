"""The train benchmark's report: tokens/s, MFU, compile seconds and memory per contender, and
its table with each contender's ratios to HF."""

from __future__ import annotations

import resource
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxlm import flops, metrics
from jaxlm.models import ModelConfig


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_per_device(dtype: str, cpu_peaks: Sequence[float] = ()) -> float:
    """The peak MFU is measured against. On CPU the best of the matmuls timed between rounds (a
    shared machine's practical peak); elsewhere the device table's bf16 peak, halved for a
    float32 step (tf32 runs at about half)."""
    device = jax.devices()[0]
    peak = max(cpu_peaks) if cpu_peaks else metrics.peak_flops_per_device(device)
    if dtype == "float32" and device.platform != "cpu":
        peak = peak / 2
    return peak


def step_report(cfg: ModelConfig, contenders: Sequence[Any], batch_size: int, length: int,
                decoder_length: int, *, peak: float, platform: str, device_kind: str,
                devices: int) -> dict:
    """Per contender (with `name`, `times`, `page_faults`, `compile_seconds`, `memory_bytes`):
    median step seconds, tokens/s, MFU, compile seconds, step memory.

    Tokens are the family's target stream (the decoder's for encoder-decoders). MFU divides by
    `devices` peaks, except on CPU, whose (possibly fake, split) devices share the one host whose
    whole matmul peak `peak` is.
    """
    step_flops = batch_size * flops.training_flops(cfg, length, decoder_length)
    tokens = batch_size * (decoder_length if cfg.family != "encoder" else length)
    peak_devices = 1 if platform == "cpu" else devices
    rows = {}
    for c in contenders:
        seconds = float(np.median(c.times))
        rows[c.name] = {"step_seconds": seconds, "tokens_per_second": tokens / seconds,
                        "mfu": metrics.mfu(step_flops, seconds, peak_devices, peak),
                        "compile_seconds": c.compile_seconds, "step_memory_bytes": c.memory_bytes,
                        "page_faults_per_step": float(np.median(c.page_faults[1:] or [0])),
                        "rounds": [round(t, 4) for t in c.times]}
    return {"device": device_kind, "platform": platform, "devices": devices,
            "peak_flops_per_device": peak, "flops_per_step": step_flops, "tokens_per_step": tokens,
            "peak_rss_bytes": peak_rss_bytes(), "results": rows}


def report(cfg: ModelConfig, contenders: Sequence[Any], batch_size: int, length: int,
           decoder_length: int, cpu_peaks: Sequence[float] = ()) -> dict:
    """step_report on this process's devices."""
    device = jax.devices()[0]
    return step_report(cfg, contenders, batch_size, length, decoder_length,
                       peak=peak_per_device(cfg.dtype, cpu_peaks), platform=device.platform,
                       device_kind=device.device_kind, devices=jax.device_count())


def format_table(result: dict) -> str:
    """The report as a fixed-width table, with each contender's ratios to HF."""
    rows = result["results"]
    lines = [f"{'':16s} {'tokens/s':>10s} {'step s':>8s} {'MFU':>6s} {'compile s':>9s} "
             f"{'step mem':>9s} {'faults/step':>11s}"]
    for name, r in rows.items():
        mem = "n/a" if r["step_memory_bytes"] is None else f"{r['step_memory_bytes'] / 2**20:.0f}M"
        lines.append(f"{name:16s} {r['tokens_per_second']:10,.0f} {r['step_seconds']:8.3f} "
                     f"{100 * r['mfu']:5.1f}% {r['compile_seconds']:9.1f} {mem:>9s} "
                     f"{r['page_faults_per_step']:11,.0f}")
    if "hf" in rows:
        hf = rows["hf"]
        for name, r in rows.items():
            if name == "hf":
                continue
            mem = ""
            if r["step_memory_bytes"] and hf["step_memory_bytes"]:
                mem = f", memory {r['step_memory_bytes'] / hf['step_memory_bytes']:.2f}x"
            speed = r["tokens_per_second"] / hf["tokens_per_second"]
            lines.append(f"{name} / hf: tokens/s {speed:.2f}x{mem}, compile "
                         f"{r['compile_seconds'] / hf['compile_seconds']:.2f}x")
    lines.append(f"peak {result['peak_flops_per_device'] / 1e9:,.0f} GFLOP/s per device "
                 f"({result['device']}, {result['devices']} device(s)); process peak RSS "
                 f"{result['peak_rss_bytes'] / 2**20:,.0f}M")
    return "\n".join(lines)
