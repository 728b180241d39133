"""Plan a run before paying for it: compile the real train step for a target and read the bill.

    target = targets.tpu_target("v5p-128")            # or targets.cpu_target(jax.devices())
    report = make_plan(config, target)                # no parameter is allocated
    print(format_plan(report))

The state is abstract (jax.eval_shape); the train step is jaxlm.train.jit_train_step, lowered and
compiled for the target's mesh exactly as the trainer compiles it. From the compiled program:
per-chip memory (`memory_analysis`), the collectives (hlo.py); from the config: model FLOPs and a
step time at an assumed MFU, each assumption reported beside its number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

from jaxlm import config as config_lib
from jaxlm import flops as flops_lib
from jaxlm import losses
from jaxlm import sharding
from jaxlm.data import layout as layout_lib
from jaxlm.data.tokenizer import ByteVocabulary
from jaxlm.models import build_model, init_params, param_count
from jaxlm.optim import make_optimizer
from jaxlm.planning import hlo
from jaxlm.planning.targets import GIB, Target
from jaxlm.train import TrainState, jit_train_step


# losses.default_chunk's element budget of a float32 logits chunk on accelerators.
ACCELERATOR_CHUNK_BUDGET = 2**28


@dataclasses.dataclass
class Plan:
    """What one compiled train step costs per chip; every byte figure is per chip."""

    target: str
    compiler: str  # tpu: libtpu's real compile | cpu: the CPU compiler's estimate
    chips: int
    num_slices: int
    mesh: dict[str, int]
    micro_batches: int
    remat_policy: str
    params: int
    batch: dict[str, Any]  # global batch size and stream lengths
    param_bytes: float
    optimizer_bytes: float
    argument_bytes: float
    output_bytes: float
    alias_bytes: float
    temp_bytes: float
    hbm_bytes: float
    flops_per_step: float
    assumptions: dict[str, float]
    step_seconds: float  # model FLOPs at the assumed MFU
    collectives: dict[str, dict[str, float]]  # kind -> count, bytes, wire_bytes per step
    collective_seconds: dict[str, float]  # ici / dcn, no overlap with compute assumed
    unknown_trip_loops: list[str]
    compile_seconds: float
    hlo_error: str = ""  # why the compiled HLO (collectives, largest buffers) is unavailable
    largest_buffers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    largest_state: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    suggestions: list[str] = dataclasses.field(default_factory=list)
    hlo_text: str = dataclasses.field(default="", repr=False)  # the optimized HLO, to read further

    @property
    def peak_bytes(self) -> float:
        """Live at once: arguments + outputs (less the donated state they share) + temporaries."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def fits(self) -> bool | None:
        return None if not self.hbm_bytes else self.peak_bytes <= self.hbm_bytes

    def to_dict(self) -> dict[str, Any]:
        values = {k: v for k, v in dataclasses.asdict(self).items() if k != "hlo_text"}
        return {**values, "peak_bytes": self.peak_bytes, "fits": self.fits}


def batch_layout(run: config_lib.RunConfig) -> layout_lib.Layout:
    """The run's batch features and lengths, without its dataset: lengths depend on the
    objective and seq_len only, so a byte vocabulary stands in for the run's."""
    return layout_lib.resolve_layout(run.objective, run.model.family, run.data.seq_len,
                                     ByteVocabulary(), packing=run.data.packing,
                                     objective_kwargs=run.objective_options)


def flops_per_step(run: config_lib.RunConfig, lengths: dict[str, int]) -> float:
    """Model training FLOPs of one step (jaxlm.flops) for the run's global batch."""
    cfg = run.model
    if cfg.family == "encoder_decoder":
        per_example = flops_lib.training_flops(cfg, lengths["encoder"], lengths["decoder"])
    else:
        per_example = flops_lib.training_flops(cfg, next(iter(lengths.values())))
    return float(per_example) * run.train.batch_size


def target_mesh(run: config_lib.RunConfig, target: Target) -> Mesh:
    """The run's (data, fsdp, tensor) mesh over the target's devices; slices along the data /
    fsdp axes as mesh.dcn_data / mesh.dcn_fsdp say (default: whole slices along data)."""
    shape = sharding.resolve_mesh_shape(*run.mesh, len(target.devices))
    dcn_data, dcn_fsdp = run.dcn
    if target.num_slices > 1 and dcn_data * dcn_fsdp == 1:
        dcn_data = target.num_slices
    if dcn_data * dcn_fsdp != target.num_slices:
        raise config_lib.ConfigError(
            f"mesh.dcn_data={dcn_data} x mesh.dcn_fsdp={dcn_fsdp} is invalid for "
            f"--num_slices={target.num_slices}: the product must equal the number of slices")
    if target.compiler == "tpu" and target.num_slices > 1:
        grid = sharding.hybrid_device_grid(shape, dcn_data, dcn_fsdp, target.devices)
    elif target.compiler == "tpu":
        try:
            grid = mesh_utils.create_device_mesh(shape, target.devices)
        except NotImplementedError:  # e.g. fsdp=4 on a 16x16 torus: split a physical axis
            grid = mesh_utils.create_device_mesh(shape, target.devices,
                                                 allow_split_physical_axes=True)
    else:  # fake devices in slice-major order: whole slices along the outer axes
        sharding.hybrid_shapes(shape, dcn_data, dcn_fsdp)
        grid = np.asarray(target.devices).reshape(shape)
    return Mesh(grid, sharding.MESH_AXES)


def abstract_train_state(run: config_lib.RunConfig, model: Any, example: dict[str, Any],
                         mesh: Mesh) -> tuple[Any, Any]:
    """(the TrainState as ShapeDtypeStructs carrying their shardings, the shardings): the state
    jaxlm.train.create_train_state would build, shaped by jax.eval_shape, never allocated."""
    optimizer = make_optimizer(run.optim)

    def init() -> TrainState:
        params = init_params(model, jax.random.key(run.seed), example)
        opt_state = optimizer.init(sharding.unbox_values(params))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=sharding.optimizer_state_axes(opt_state, params),
                          rng=jax.random.key_data(jax.random.key(run.seed)))

    with sharding.activate(mesh, run.rules):
        boxed = jax.eval_shape(init)
        shardings = sharding.tree_shardings(boxed, mesh, run.rules)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         sharding.unbox_values(boxed), shardings)
    return state, shardings


def _shard_bytes(x: jax.ShapeDtypeStruct) -> float:
    return float(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize


def state_bytes(tree: Any) -> float:
    """Bytes per device of a tree of sharded ShapeDtypeStructs."""
    return sum(_shard_bytes(x) for x in jax.tree.leaves(tree))


def _largest_state(state: Any, count: int = 5) -> list[dict[str, Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    rows = sorted(((_shard_bytes(x), jax.tree_util.keystr(path), x) for path, x in leaves),
                  key=lambda r: -r[0])[:count]
    return [{"bytes": b, "name": name, "shape": list(x.shape), "dtype": str(x.dtype),
             "spec": str(x.sharding.spec)} for b, name, x in rows]


def summarize_collectives(found: list[hlo.Collective], target: Target
                          ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per kind: instructions, executions, result and wire bytes per step; and the seconds at the
    target's ICI / DCN bandwidth (a group that spans slices goes over DCN)."""
    table: dict[str, dict[str, float]] = {}
    wire = {"ici": 0.0, "dcn": 0.0}
    for c in found:
        if c.dcn:
            c = dataclasses.replace(c, group_size=target.num_slices)
        spans = c.dcn or target.num_slices > 1 and c.groups is not None and any(
            len({target.slice_of(i) for i in g if i < len(target.devices)}) > 1
            for g in c.groups)
        row = table.setdefault(c.kind + (" (DCN)" if spans else ""), {
            "instructions": 0, "executions": 0, "bytes": 0.0, "wire_bytes": 0.0})
        row["instructions"] += 1
        row["executions"] += c.runs
        row["bytes"] += c.bytes * c.runs
        row["wire_bytes"] += c.wire_bytes * c.runs
        wire["dcn" if spans else "ici"] += c.wire_bytes * c.runs
    seconds = {"ici": wire["ici"] / target.chip.ici_bytes_per_s,
               "dcn": wire["dcn"] / target.chip.dcn_bytes_per_s}
    return table, seconds


def suggest(report: Plan, run: config_lib.RunConfig) -> list[str]:
    """What to change when the plan does not fit, most effective first."""
    state = report.param_bytes + report.optimizer_bytes
    tips = []
    data, fsdp, tensor = report.mesh["data"], report.mesh["fsdp"], report.mesh["tensor"]
    if state > 0.25 * report.hbm_bytes and data > 1:
        tips.append(f"shard the state over more chips: --config.mesh.fsdp={fsdp * data} "
                    f"--config.mesh.data=1 (state now {state / GIB:.1f} GiB per chip)")
    if report.temp_bytes > 0.25 * report.hbm_bytes:
        per_chip = run.train.batch_size // max(data * fsdp, 1)
        if per_chip // report.micro_batches >= 2:
            tips.append(f"accumulate over micro-batches: --config.train.micro_batches="
                        f"{report.micro_batches * 2} (temporaries now "
                        f"{report.temp_bytes / GIB:.1f} GiB per chip)")
        if report.remat_policy != "full":
            tips.append("save less for the backward pass: --config.model.remat_policy=full")
    if tensor == 1 and state > 0.5 * report.hbm_bytes:
        tips.append("split the layers too: --config.mesh.tensor=4 (Megatron-style)")
    return tips or ["a larger slice, or a smaller global batch (train.batch_size)"]


@contextlib.contextmanager
def target_loss_chunks(target: Target) -> Iterator[None]:
    """losses.default_chunk sizes the fused loss's chunks for jax.default_backend(), which is this
    CPU host's while compiling for a TPU: trace with the accelerator budget the run will use."""
    if target.compiler != "tpu":
        yield
        return
    original = losses.default_chunk
    losses.default_chunk = functools.partial(original, budget=ACCELERATOR_CHUNK_BUDGET)
    try:
        yield
    finally:
        losses.default_chunk = original


def make_plan(config: ml_collections.ConfigDict, target: Target, *, mfu: float = 0.5,
              hbm_bytes: float | None = None) -> Plan:
    """Compiles `config`'s train step for `target` and reports its per-chip bill (see Plan)."""
    run = config_lib.resolve(config)
    try:
        mesh = target_mesh(run, target)
        layout = batch_layout(run)
    except ValueError as error:
        raise config_lib.ConfigError(str(error)) from None
    model = build_model(run.model)
    example = {k: jnp.zeros((1, layout.feature_length(k)), jnp.int32)
               for k in layout.feature_keys}
    state, shardings = abstract_train_state(run, model, example, mesh)
    batch_spec = sharding.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((run.train.batch_size, layout.feature_length(k)),
                                     jnp.int32, sharding=batch_spec)
             for k in layout.feature_keys}
    step = jit_train_step(model, run.optim, shardings, mesh,
                          micro_batches=run.train.micro_batches,
                          label_smoothing=run.train.label_smoothing, z_loss=run.train.z_loss,
                          rules=run.rules)
    start = time.perf_counter()
    with sharding.activate(mesh, run.rules), target_loss_chunks(target):
        compiled = step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    try:
        text = compiled.as_text()
    except Exception as error:  # a libtpu newer than jaxlib's pin cannot hand its HLO back
        text, hlo_error = "", f"{type(error).__name__}: {error}"
    else:
        hlo_error = ""
    found, unknown = hlo.collectives(text)
    table, collective_seconds = summarize_collectives(found, target)
    flops = flops_per_step(run, layout.lengths)
    chips = len(target.devices)
    report = Plan(
        target=target.name, compiler=target.compiler, chips=chips,
        num_slices=target.num_slices, mesh={k: int(v) for k, v in mesh.shape.items()},
        micro_batches=run.train.micro_batches, remat_policy=run.model.remat_policy,
        params=param_count(state.params),
        batch={"size": run.train.batch_size, **layout.lengths},
        param_bytes=state_bytes(state.params), optimizer_bytes=state_bytes(state.opt_state),
        argument_bytes=float(memory.argument_size_in_bytes),
        output_bytes=float(memory.output_size_in_bytes),
        alias_bytes=float(memory.alias_size_in_bytes),
        temp_bytes=float(memory.temp_size_in_bytes),
        hbm_bytes=float(target.chip.hbm_bytes if hbm_bytes is None else hbm_bytes),
        flops_per_step=flops,
        assumptions={"mfu": mfu, "peak_flops_per_chip": target.chip.peak_flops,
                     "ici_bytes_per_s": target.chip.ici_bytes_per_s,
                     "dcn_bytes_per_s": target.chip.dcn_bytes_per_s},
        step_seconds=flops / (chips * target.chip.peak_flops * mfu),
        collectives=table, collective_seconds=collective_seconds,
        unknown_trip_loops=unknown, compile_seconds=compile_seconds, hlo_error=hlo_error,
        hlo_text=text)
    if report.fits is False:
        report.largest_buffers = [
            {"bytes": b, "instruction": name, "opcode": op, "op_name": op_name}
            for b, name, op, op_name in hlo.largest_buffers(text)]
        report.largest_state = _largest_state(state)
        report.suggestions = suggest(report, run)
    return report
