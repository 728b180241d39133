"""Device mesh, logical-to-mesh axis rules, and shardings for params, state and batches.

Layers name their axes logically (`embed`, `heads`, `mlp`, ...); this module alone maps them onto
the physical mesh axes `data`, `fsdp` and `tensor` (the table is the config's `mesh.rules`). On
several TPU slices the mesh is hybrid: `mesh.dcn_data` / `mesh.dcn_fsdp` of the data / fsdp axis
run over the data-centre network (DCN), the rest inside each slice (ICI).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, Any], ...]

# Data parallel over (data, fsdp); parameters sharded over fsdp along `embed` (ZeRO-3 style) and
# over tensor along heads / mlp / vocab (Megatron style).
DEFAULT_RULES: Rules = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("relpos_buckets", None),
)


def format_rules(rules: Rules) -> str:
    """Rules as the `mesh.rules` string: `logical=mesh[+mesh...]` items joined by commas, an empty
    right-hand side for a replicated axis."""
    def axes(mesh_axes: Any) -> str:
        if mesh_axes is None:
            return ""
        return "+".join(mesh_axes) if isinstance(mesh_axes, tuple) else mesh_axes

    return ",".join(f"{name}={axes(mesh_axes)}" for name, mesh_axes in rules)


def parse_rules(spec: str, base: Rules = DEFAULT_RULES) -> Rules:
    """`mesh.rules` -> rules: `base` with each listed logical axis remapped, in base's order.

    Syntax: `embed=fsdp,heads=tensor,activation_batch=data+fsdp,kv=` (`+` joins mesh axes, an
    empty or `none` right-hand side replicates). Unlisted logical axes keep their `base` mapping.
    """
    known = [name for name, _ in base]
    given: dict[str, Any] = {}
    for item in (part.strip() for part in str(spec).split(",")):
        if not item:
            continue
        name, eq, right = (x.strip() for x in item.partition("="))
        if not eq:
            raise ValueError(f"mesh.rules={spec!r} is invalid at {item!r}: expected "
                             "logical=mesh[+mesh...] items separated by commas")
        if name not in known:
            raise ValueError(f"mesh.rules={spec!r} is invalid: unknown logical axis {name!r}; "
                             f"expected one of: {', '.join(known)}")
        if name in given:
            raise ValueError(f"mesh.rules={spec!r} is invalid: logical axis {name!r} is mapped "
                             "twice")
        axes = tuple(a.strip() for a in right.split("+")) if right.lower() not in ("", "none") \
            else ()
        bad = [a for a in axes if a not in MESH_AXES]
        if bad or len(set(axes)) < len(axes):
            raise ValueError(f"mesh.rules={spec!r} is invalid at {item!r}: "
                             + (f"unknown mesh axis {bad[0]!r}" if bad else "a repeated mesh axis")
                             + f"; expected one of: {', '.join(MESH_AXES)} (joined by +)")
        given[name] = None if not axes else axes[0] if len(axes) == 1 else axes
    return tuple((name, given.get(name, mesh_axes)) for name, mesh_axes in base)


def resolve_mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, ...]:
    """Fills in the one -1 axis with the remaining devices and checks the product."""
    shape = {"data": data, "fsdp": fsdp, "tensor": tensor}
    free = [k for k, v in shape.items() if v == -1]
    for k, v in shape.items():
        if v == 0 or v < -1:
            raise ValueError(f"mesh.{k}={v} is invalid: expected a positive size or -1 "
                             "(all remaining devices).")
    if len(free) > 1:
        raise ValueError(f"mesh.{free[1]}=-1 is invalid: only one mesh axis may be -1 "
                         f"(mesh.{free[0]} is -1 too).")
    fixed = int(np.prod([v for v in shape.values() if v != -1]))
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh.{free[0]}=-1 cannot be resolved: {num_devices} devices are "
                             f"not divisible by the other axes' product {fixed}.")
        shape[free[0]] = num_devices // fixed
    if int(np.prod(list(shape.values()))) != num_devices:
        raise ValueError(f"mesh (data={shape['data']}, fsdp={shape['fsdp']}, "
                         f"tensor={shape['tensor']}) needs {int(np.prod(list(shape.values())))} "
                         f"devices but {num_devices} are available; set one axis to -1.")
    return tuple(shape[k] for k in MESH_AXES)


def hybrid_shapes(shape: Sequence[int], dcn_data: int, dcn_fsdp: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(per-slice ICI shape, DCN shape) of a (data, fsdp, tensor) mesh whose data / fsdp axes span
    dcn_data / dcn_fsdp slices; the tensor axis always stays inside a slice."""
    dcn = (dcn_data, dcn_fsdp, 1)
    for axis, size, across in zip(MESH_AXES, shape, dcn):
        if across < 1 or size % across:
            raise ValueError(f"mesh.dcn_{axis}={across} is invalid: expected a positive divisor "
                             f"of the mesh's {axis} axis size {size}")
    return tuple(size // across for size, across in zip(shape, dcn)), dcn


def hybrid_device_grid(shape: Sequence[int], dcn_data: int, dcn_fsdp: int,
                       devices: Sequence[Any]) -> np.ndarray:
    """The devices laid out as `shape` with whole slices along the data / fsdp axes
    (mesh_utils.create_hybrid_device_mesh). Slices are the devices' `slice_index` (multi-slice
    TPU); devices without one (GPU, CPU) are grouped by process instead."""
    ici, dcn = hybrid_shapes(shape, dcn_data, dcn_fsdp)
    by_slice = hasattr(devices[0], "slice_index")
    groups = len({d.slice_index if by_slice else d.process_index for d in devices})
    if groups != dcn_data * dcn_fsdp:
        unit = "slices" if by_slice else "processes (the devices have no slice_index)"
        raise ValueError(f"mesh.dcn_data={dcn_data} x mesh.dcn_fsdp={dcn_fsdp} is invalid: the "
                         f"{len(devices)} devices are in {groups} {unit}; the product must equal "
                         "that number")
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=not by_slice)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None, dcn_data: int = 1,
              dcn_fsdp: int = 1) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes); hybrid
    (slices along data / fsdp) when dcn_data or dcn_fsdp > 1."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
    if dcn_data * dcn_fsdp > 1:
        grid = hybrid_device_grid(shape, dcn_data, dcn_fsdp, devices)
    elif devices == list(jax.devices()):
        # Topology-aware layout on real accelerators (ICI neighbours along the fast axes).
        grid = mesh_utils.create_device_mesh(shape, devices)
    else:
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def mesh_from_config(mesh_cfg: Any) -> Mesh:
    """Mesh from a config section with fields data, fsdp, tensor (and dcn_data, dcn_fsdp)."""
    return make_mesh(int(mesh_cfg.data), int(mesh_cfg.fsdp), int(mesh_cfg.tensor),
                     dcn_data=int(mesh_cfg.get("dcn_data", 1)),
                     dcn_fsdp=int(mesh_cfg.get("dcn_fsdp", 1)))


def _mesh_axes_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    names = axes if isinstance(axes, tuple) else (axes,)
    return int(np.prod([mesh.shape[n] for n in names]))


def logical_to_sharding(logical_spec: PartitionSpec, shape: Sequence[int], mesh: Mesh,
                        rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """NamedSharding for an array with logical axis names; a dimension that the mapped mesh axes do
    not divide is replicated instead (e.g. 2 kv heads on tensor=4, or a vocab of 50257)."""
    spec = nn.logical_to_mesh_axes(logical_spec, rules)
    spec = tuple(axes if dim % _mesh_axes_size(mesh, axes) == 0 else None
                 for axes, dim in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape))
    return NamedSharding(mesh, PartitionSpec(*spec))


def tree_shardings(boxed_abstract: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Shardings for a tree of (logically boxed) arrays or ShapeDtypeStructs; unboxed structure."""
    specs = nn.get_partition_spec(boxed_abstract)
    shapes = unbox_values(boxed_abstract)
    return jax.tree.map(lambda spec, x: logical_to_sharding(spec, x.shape, mesh, rules), specs,
                        shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def unbox_values(boxed: Any) -> Any:
    """Strips logical-axis boxes without applying their sharding constraints."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x, boxed,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def optimizer_state_axes(opt_state: Any, boxed_params: Any) -> Any:
    """`opt_state` (built from the unboxed params) with each per-parameter leaf boxed with logical
    axes derived from its parameter's, so tree_shardings shards it like the parameter.

    A leaf of the parameter's shape (AdamW's moments, unfactored second moments) takes its axes;
    a factored moment (Adafactor's v_row / v_col: one dimension reduced away) keeps the axes of
    the dimensions it keeps; counters, scalars and placeholders stay unboxed (replicated).
    """
    flat = jax.tree_util.tree_flatten_with_path(
        boxed_params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))[0]
    params = {tuple(path): box for path, box in flat if isinstance(box, nn.LogicallyPartitioned)}

    def box(path: tuple[Any, ...], leaf: Any) -> Any:
        for start in range(len(path)):  # the longest suffix that is a parameter's path
            param = params.get(tuple(path[start:]))
            if param is not None:
                fields = [k.name for k in path[:start] if isinstance(k, jax.tree_util.GetAttrKey)]
                names = _derived_axes(param.value.shape, tuple(param.names), tuple(leaf.shape),
                                      fields[-1] if fields else "")
                return leaf if names is None else param.replace(value=leaf, names=names)
        return leaf

    return jax.tree_util.tree_map_with_path(box, opt_state)


def _derived_axes(shape: tuple[int, ...], names: tuple[Any, ...], leaf_shape: tuple[int, ...],
                  field: str) -> tuple[Any, ...] | None:
    if leaf_shape == shape:
        return names
    if len(leaf_shape) != len(shape) - 1 or len(shape) < 2:
        return None
    dropped = [i for i in range(len(shape)) if shape[:i] + shape[i + 1:] == leaf_shape]
    if not dropped:
        return None
    # Equal sizes leave the dropped dimension ambiguous: optax's Adafactor reduces v_row over the
    # largest dimension and v_col over the second largest (np.argsort order).
    order = np.argsort(shape)
    preferred = {"v_row": int(order[-1]), "v_col": int(order[-2])}.get(field)
    drop = preferred if preferred in dropped else dropped[0]
    return names[:drop] + names[drop + 1:]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch features [batch, length]: the batch split over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """Mesh and logical rules in scope, so with_logical_constraint inside jit resolves."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def sharded_initializer(init_fn: Any, example_key: Any, mesh: Mesh,
                        rules: Rules = DEFAULT_RULES) -> tuple[Any, Any]:
    """`init_fn(key)` (returning a boxed tree) jitted straight into its shardings, once: returns
    (key -> unboxed sharded tree, its shardings). Every later key reuses the compiled program.

    The abstract shapes come from jax.eval_shape, so no host ever holds the full unsharded tree.
    """
    with activate(mesh, rules):
        shardings = tree_shardings(jax.eval_shape(init_fn, example_key), mesh, rules)
        jitted = jax.jit(lambda key: nn.meta.unbox(init_fn(key)), out_shardings=shardings)

    def init(key: Any) -> Any:
        with activate(mesh, rules):
            return jitted(key)

    return init, shardings
