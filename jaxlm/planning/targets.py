"""What a plan compiles for: Cloud TPU slices by name (v5p-128, v5e-256, v4-32, ...) or N CPU devices.

A TPU target compiles with the real TPU compiler on this host when libtpu is installed (the
`tpu` extra): `jax.experimental.topologies.get_topology_desc` describes the slice's devices without
any TPU attached, as MaxText's train_compile.py does. Without libtpu a plan compiles the same
program for N fake CPU devices instead: the sharding, the collectives and the FLOPs are the same,
but the memory figures are the CPU compiler's (no TPU layouts or fusions), an estimate only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Sequence
from typing import Any

GIB = 2**30

# Per chip: HBM, dense bf16 peak (the vendors' spec sheets), and the collective bandwidths a plan
# assumes. ICI: about a third of the published per-chip ICI bandwidth (v4 2.4, v5e 1.6, v5p 4.8,
# v6e 3.6 Tbit/s), what a ring collective achieves in practice; DCN: 50 Gbit/s per chip
# (a 200 Gbit/s host NIC shared by 4 chips). Both are overridable: they are assumptions.
@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_bytes: int
    peak_flops: float
    ici_bytes_per_s: float
    dcn_bytes_per_s: float = 6.25e9
    cores_per_chip: int = 1  # the `-N` of a slice name counts TensorCores: N / cores chips


CHIPS = {
    "v4": Chip("TPU v4", 32 * GIB, 275e12, 100e9, cores_per_chip=2),
    "v5e": Chip("TPU v5e", 16 * GIB, 197e12, 50e9),
    "v5p": Chip("TPU v5p", 95 * GIB, 459e12, 200e9, cores_per_chip=2),
    "v6e": Chip("TPU v6e", 32 * GIB, 918e12, 150e9),
}
# The CPU compile of a plan without a named topology: no HBM limit, nominal speeds.
CPU_CHIP = Chip("CPU", 0, 1e12, 10e9, 10e9)

# Chip counts -> physical shapes (MaxText's accelerator_to_spec_map): 3D tori for v4 / v5p,
# 2D for v5e / v6e.
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
              256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
              256: "16x16"}


class TopologyError(ValueError):
    """An unknown slice name, or a topology this host's libtpu cannot describe."""


@dataclasses.dataclass
class Target:
    """The devices a plan compiles for, their chip and how they split into slices."""

    name: str  # v5p-128, or cpu-8
    chip: Chip
    devices: list[Any]
    num_slices: int
    compiler: str  # 'tpu' (libtpu, real TPU compile) | 'cpu' (fake CPU devices: estimates)

    @property
    def devices_per_slice(self) -> int:
        return len(self.devices) // self.num_slices

    def slice_of(self, index: int) -> int:
        """The slice of the device at `index` of `devices`."""
        device = self.devices[index]
        return int(getattr(device, "slice_index", index // self.devices_per_slice) or 0)


def parse_topology(name: str) -> tuple[str, Chip, str, int]:
    """'v5p-128' -> ('v5p', its Chip, 'v5p:4x4x4', 64 chips)."""
    match = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name)
    if not match:
        raise TopologyError(f"--topology={name!r} is invalid: expected a slice name like v4-32, "
                            f"v5e-256, v5p-128 or v6e-64 (generations: {', '.join(CHIPS)})")
    generation, cores = match.group(1), int(match.group(2))
    chip = CHIPS[generation]
    chips = cores // chip.cores_per_chip
    shapes = _SHAPES_3D if chip.cores_per_chip == 2 else _SHAPES_2D
    if chips not in shapes or cores % chip.cores_per_chip:
        raise TopologyError(f"--topology={name!r} is invalid: {generation} slices have "
                            + ", ".join(f"{generation}-{n * chip.cores_per_chip}" for n in shapes))
    return generation, chip, f"{generation}:{shapes[chips]}", chips


def libtpu_available() -> bool:
    """Whether the TPU compiler (the `libtpu` package of the `tpu` extra) is installed."""
    return importlib.util.find_spec("libtpu") is not None


def tpu_target(name: str, num_slices: int = 1) -> Target:
    """The devices of `num_slices` slices `name`, described by libtpu (no TPU needed)."""
    from jax.experimental import topologies

    generation, chip, topology, chips = parse_topology(name)
    try:
        desc = topologies.get_topology_desc(
            platform="tpu", topology_name=topology,
            chip_config_name="megacore" if chip.cores_per_chip == 2 else "default",
            chips_per_host_bounds=(2, 2, 1), num_slices=num_slices)
    except Exception as error:  # libtpu's errors are RuntimeError / XlaRuntimeError
        raise TopologyError(f"libtpu could not describe {topology} x {num_slices}: {error}") \
            from None
    if len(desc.devices) != chips * num_slices:
        raise TopologyError(f"libtpu described {len(desc.devices)} devices for {topology} x "
                            f"{num_slices}; expected {chips * num_slices} (one per chip)")
    return Target(name, chip, list(desc.devices), num_slices, "tpu")


def cpu_target(devices: Sequence[Any], topology: str | None = None,
               num_slices: int = 1) -> Target:
    """Fake CPU devices standing in for `topology`'s chips (or for themselves)."""
    chip = parse_topology(topology)[1] if topology else CPU_CHIP
    return Target(topology or f"cpu-{len(devices)}", chip, list(devices), num_slices, "cpu")


def chips_of(topology: str, num_slices: int = 1) -> int:
    """Chips (devices) of `num_slices` slices `topology`."""
    return parse_topology(topology)[3] * num_slices
