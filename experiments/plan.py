"""Plan a run at pod scale before paying for it: compile its train step for a slice, on this host.

    # Llama 2 7B, causal LM, on a v5p-128 slice, the state fully sharded (ZeRO-3):
    python experiments/plan.py --config=experiments/configs/clm.py:base \
        --config.model.preset=llama2_7b --topology=v5p-128 --config.mesh.fsdp=-1

    # T5 v1.1 XXL, span corruption, two v5e-256 slices, written to a file as well:
    python experiments/plan.py --config=experiments/configs/span_corruption.py:base \
        --config.model.preset=t5_v1_1_xxl --topology=v5e-256 --num_slices=2 \
        --config.mesh.fsdp=-1 --json=/tmp/t5_xxl_plan.json

    # any mesh on N fake CPU devices (no TPU compiler needed):
    python experiments/plan.py --config.model.preset=base --cpu_devices=8 --config.mesh.fsdp=4

Prints per chip: parameter and optimizer bytes, the compiled step's argument / output /
temporary bytes against the chip's HBM, the model FLOPs, the collectives of the compiled program
(x trip count inside loops) and step and collective time estimates with their assumptions. A plan
that does not fit lists its largest buffers and what to change. No parameter is allocated.

With libtpu installed (`pip install -e .[tpu]`) a --topology compiles with the real TPU compiler;
without it the same program compiles for fake CPU devices, one per chip, and the memory figures
are the CPU compiler's estimates (said in the output). A 7B model compiles in a few minutes on
2 CPU cores (docs/scaling.md). When several mesh axes are -1, the ones given on the command line
keep -1 and the others become 1 (`--config.mesh.fsdp=-1` on a config with mesh.data=-1).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxlm import cli  # noqa: E402
from jaxlm import config as config_lib  # noqa: E402

_CONFIG = cli.define_config_flag(default=config_lib.__file__, documented_in="jaxlm/config.py",
                                 config=config_lib.get_config())
_TOPOLOGY = flags.DEFINE_string("topology", None, "Cloud TPU slice: v4-32, v5e-256, v5p-128, ...")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "Slices of --topology, joined over DCN.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", None,
                                    "Compile for this many fake CPU devices (with --topology: "
                                    "standing in for its chips).")
_MFU = flags.DEFINE_float("mfu", 0.5, "Assumed model FLOPs utilisation for the step time.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "Override the chip's HBM (GiB) to test a fit.")
_JSON = flags.DEFINE_string("json", None, "Also write the plan as JSON to this path.")
_HLO = flags.DEFINE_string("hlo", None, "Also write the compiled step's optimized HLO here.")


def _free_axes_from_command_line(config) -> None:
    """Several -1 mesh axes: those set on the command line keep -1, the rest become 1."""
    free = [a for a in ("data", "fsdp", "tensor") if config.mesh[a] == -1]
    given = [a for a in free if any(arg.startswith(f"--config.mesh.{a}=") for arg in sys.argv)]
    if len(free) > 1 and len(given) == 1:
        for axis in free:
            if axis not in given:
                config.mesh[axis] = 1


def _initialize_jax() -> None:
    """CPU only (the TPU compiler needs no TPU); N fake devices before any backend starts."""
    import jax

    from jaxlm.planning import targets

    jax.config.update("jax_platforms", "cpu")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server: not on a TPU VM
    # Any other JAX process of this environment may hold libtpu's lockfile; compiling needs none.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    count = _CPU_DEVICES.value
    if count is None and _TOPOLOGY.value and not targets.libtpu_available():
        count = targets.chips_of(_TOPOLOGY.value, _NUM_SLICES.value)
        print(f"libtpu is not installed: compiling for {count} fake CPU devices instead "
              "(memory figures are CPU-compiler estimates)")
    if count:
        jax.config.update("jax_num_cpu_devices", count)


def _target():
    import jax

    from jaxlm.planning import targets

    topology, slices = _TOPOLOGY.value, _NUM_SLICES.value
    if topology and jax.device_count() == 1 and targets.libtpu_available():
        return targets.tpu_target(topology, slices)
    if topology and jax.device_count() != targets.chips_of(topology, slices):
        raise config_lib.ConfigError(
            f"--cpu_devices={jax.device_count()} is invalid for --topology={topology} x "
            f"{slices}: expected its {targets.chips_of(topology, slices)} chips")
    return targets.cpu_target(jax.devices(), topology, slices)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxlm.planning import targets
    try:
        if _TOPOLOGY.value:
            targets.parse_topology(_TOPOLOGY.value)
        _free_axes_from_command_line(_CONFIG.value)
        config_lib.resolve(_CONFIG.value)  # seconds, before JAX initialises anything
        _initialize_jax()
        try:
            target = _target()
        except targets.TopologyError as error:  # libtpu present but unable: fall back
            count = targets.chips_of(_TOPOLOGY.value, _NUM_SLICES.value)
            print(f"{error}\nfalling back to {count} fake CPU devices", file=sys.stderr)
            os.execv(sys.executable, [sys.executable, *sys.argv, f"--cpu_devices={count}"])
        from jaxlm.planning.format import format_plan
        from jaxlm.planning.plan import make_plan

        gib = None if _HBM_GIB.value is None else _HBM_GIB.value * targets.GIB
        plan = make_plan(_CONFIG.value, target, mfu=_MFU.value, hbm_bytes=gib)
    except (config_lib.ConfigError, targets.TopologyError) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    from jaxlm import io

    if _JSON.value:  # local paths and gs:// alike
        io.write_text(_JSON.value, json.dumps(plan.to_dict(), indent=2))
    if _HLO.value:
        io.write_text(_HLO.value, plan.hlo_text)
    return 0 if plan.fits is not False else 1


if __name__ == "__main__":
    cli.run(main)
