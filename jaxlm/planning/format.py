"""The plan as text: per chip, each estimate with the assumption it rests on."""

from __future__ import annotations

from jaxlm.planning.plan import Plan
from jaxlm.planning.targets import GIB


def gib(x: float) -> str:
    """Bytes in GiB, or MiB / KiB for small amounts (tiny test models)."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20)):
        if abs(x) >= 0.1 * scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x / 2**10:.1f} KiB"


def _seconds(x: float) -> str:
    return f"{x * 1e3:,.1f} ms"


def format_plan(plan: Plan) -> str:
    """A readable report of `plan` (the JSON file holds the same numbers)."""
    compiler = ("libtpu: the real TPU compiler, for this slice's topology" if plan.compiler == "tpu"
                else f"CPU compiler over {plan.chips} fake devices: memory figures are CPU-"
                     "compiler estimates (no TPU layouts or fusions); sharding, collectives "
                     "and FLOPs are the run's")
    mesh = ", ".join(f"{k}={v}" for k, v in plan.mesh.items())
    state = plan.param_bytes + plan.optimizer_bytes
    a = plan.assumptions
    lines = [
        f"plan for {plan.target} x {plan.num_slices} slice(s): {plan.chips} chips, mesh {mesh}",
        f"  compiled by: {compiler} ({plan.compile_seconds:.0f} s)",
        f"  model: {plan.params:,} params | batch {plan.batch} | micro-batches "
        f"{plan.micro_batches} | remat {plan.remat_policy}",
        "memory per chip:",
        f"  params {gib(plan.param_bytes)} + optimizer state {gib(plan.optimizer_bytes)} = "
        f"{gib(state)}",
        f"  compiled step: arguments {gib(plan.argument_bytes)}, outputs "
        f"{gib(plan.output_bytes)} (donated, shared with the arguments: "
        f"{gib(plan.alias_bytes)}), temporaries {gib(plan.temp_bytes)}",
    ]
    if plan.hbm_bytes:
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        lines.append(f"  peak {gib(plan.peak_bytes)} of {gib(plan.hbm_bytes)} HBM "
                     f"({plan.peak_bytes / plan.hbm_bytes:.0%}): {verdict}")
    else:
        lines.append(f"  peak {gib(plan.peak_bytes)} (no HBM limit: a CPU target)")
    lines += [
        "compute:",
        f"  model FLOPs per step {plan.flops_per_step:.3e} (jaxlm.flops, 3x forward matmuls)",
        f"  step time {_seconds(plan.step_seconds)}  assuming MFU {a['mfu']:.0%} of "
        f"{a['peak_flops_per_chip'] / 1e12:.0f} TFLOP/s bf16 per chip",
        "collectives per step (ops inside while loops, e.g. the scanned layers, counted once per "
        "iteration: x trip count):",
    ]
    for kind, row in sorted(plan.collectives.items()):
        lines.append(f"  {kind:<18} {int(row['instructions']):>4} ops, {int(row['executions']):>5}"
                     f" executions, {gib(row['bytes'])} buffers, {gib(row['wire_bytes'])} sent "
                     "per chip (ring)")
    if plan.hlo_error:
        lines.append(f"  unavailable: the compiled HLO could not be read ({plan.hlo_error}); "
                     "install the libtpu version jax pins (pip install -e .[tpu])")
    elif not plan.collectives:
        lines.append("  none")
    if plan.unknown_trip_loops:
        lines.append(f"  loops of unknown trip count, counted once: {plan.unknown_trip_loops}")
    lines.append(f"  time {_seconds(plan.collective_seconds['ici'])} over ICI at "
                 f"{a['ici_bytes_per_s'] / 1e9:.0f} GB/s per chip"
                 + (f" + {_seconds(plan.collective_seconds['dcn'])} over DCN at "
                    f"{a['dcn_bytes_per_s'] / 1e9:.2f} GB/s per chip" if plan.num_slices > 1
                    else "")
                 + " (assumed effective bandwidths; no overlap with compute assumed)")
    if plan.fits is False:
        lines.append("largest buffers of the compiled step (per chip):")
        lines += [f"  {gib(b['bytes'])}  {b['opcode']} {b['instruction']}  {b['op_name']}"
                  for b in plan.largest_buffers]
        lines.append("largest state arrays (per chip):")
        lines += [f"  {gib(s['bytes'])}  {s['name']} {s['shape']} {s['dtype']} {s['spec']}"
                  for s in plan.largest_state]
        lines.append("suggestions:")
        lines += [f"  {tip}" for tip in plan.suggestions]
    return "\n".join(lines)
