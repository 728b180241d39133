"""Device mesh, logical-to-mesh axis rules, and shardings for params, state and batches.

Layers name their axes logically (`embed`, `heads`, `mlp`, ...); this module alone maps them onto
the physical mesh axes `data`, `fsdp` and `tensor`.
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


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
    if devices == list(jax.devices()):
        # Topology-aware layout on real accelerators (ICI neighbours along the fast axes).
        grid = mesh_utils.create_device_mesh(shape, devices)
    else:
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def mesh_from_config(mesh_cfg: Any) -> Mesh:
    """Mesh from a config section with fields data, fsdp and tensor."""
    return make_mesh(int(mesh_cfg.data), int(mesh_cfg.fsdp), int(mesh_cfg.tensor))


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


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch features [batch, length]: the batch split over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """Mesh and logical rules in scope, so with_logical_constraint inside jit resolves."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def init_sharded(init_fn: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> tuple[Any, Any]:
    """Runs `init_fn()` (returning a boxed tree) jitted straight into its shardings.

    The abstract shapes come from jax.eval_shape, so no host ever holds the full unsharded tree.
    Returns (unboxed sharded tree, its shardings).
    """
    with activate(mesh, rules):
        abstract = jax.eval_shape(init_fn)
        shardings = tree_shardings(abstract, mesh, rules)
        tree = jax.jit(lambda: nn.meta.unbox(init_fn()), out_shardings=shardings)()
    return tree, shardings
