"""Mesh construction and sharded execution on 8 fake CPU devices."""

import pathlib
import re

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from jaxlm import sharding
from jaxlm.models import build_model, init_params
from jaxlm.optim import OptimConfig, make_optimizer
from jaxlm.train import create_train_state, jit_train_step

from .models._util import FAMILIES, logits, make, random_batch, tiny


def test_eight_fake_devices_are_visible():
    assert jax.device_count() == 8


@pytest.mark.parametrize("axes,expected", [((-1, 1, 1), (8, 1, 1)), ((2, -1, 2), (2, 2, 2)),
                                           ((1, 1, -1), (1, 1, 8))])
def test_mesh_axis_minus_one_takes_the_remaining_devices(axes, expected):
    assert sharding.resolve_mesh_shape(*axes, num_devices=8) == expected


@pytest.mark.parametrize("axes,field", [((3, 1, 1), "needs 3 devices"), ((-1, -1, 1), "mesh.fsdp"),
                                        ((0, 1, 1), "mesh.data"), ((3, -1, 1), "mesh.fsdp")])
def test_invalid_mesh_is_refused(axes, field):
    with pytest.raises(ValueError, match=field):
        sharding.resolve_mesh_shape(*axes, num_devices=8)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_on_a_2x2x2_mesh_equals_one_device(family):
    cfg = tiny(family, num_kv_heads=2, scan_layers=True, position="relative"
               if family == "encoder_decoder" else "rotary")
    batch = random_batch(cfg, 4, 16)
    model, params = make(cfg, batch)
    expected = logits(model, params, batch)

    mesh = sharding.make_mesh(2, 2, 2)
    init, shardings = sharding.sharded_initializer(
        lambda key: init_params(model, key, batch), jax.random.key(0), mesh)
    sharded = init(jax.random.key(0))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), sharded,
                 params)  # the same init, computed straight into its shardings
    other = init(jax.random.key(1))  # the compiled initializer, another key: another init
    assert not np.allclose(other["token_embed"]["embedding"], sharded["token_embed"]["embedding"])
    with sharding.activate(mesh):
        batch_on_mesh = jax.device_put(batch, sharding.batch_sharding(mesh))
        out = jax.jit(lambda p, b: model.apply({"params": p}, b))(sharded, batch_on_mesh)
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)

    stack = "encoder" if family == "encoder" else "decoder"
    wi = sharded[stack]["layers"]["mlp"]["wi"]["kernel"]  # [layers, embed, mlp]
    assert wi.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
    assert wi.addressable_shards[0].data.shape == (wi.shape[0], wi.shape[1] // 2,
                                                   wi.shape[2] // 2)
    query = sharded[stack]["layers"]["self_attention"]["query"]["kernel"]  # [l, embed, heads, kv]
    assert query.sharding.spec == PartitionSpec(None, "fsdp", "tensor", None)
    table = sharded["token_embed"]["embedding"]
    assert table.addressable_shards[0].data.shape == (cfg.vocab_size // 2, cfg.d_model // 2)


def test_dimension_not_divisible_by_its_mesh_axes_is_replicated():
    mesh = sharding.make_mesh(2, 2, 2)
    spec = sharding.logical_to_sharding(PartitionSpec("vocab", "embed"),
                                        (50257, 64), mesh).spec
    assert tuple(spec) == (None, "fsdp")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_has_logical_axis_names(family, scan):
    cfg = tiny(family, scan_layers=scan, position="learned", num_token_types=2, use_bias=True,
               norm="layernorm", norm_bias=True, tie_embeddings=False, output_bias=True,
               mlm_head_transform=True)
    boxed = jax.eval_shape(lambda: init_params(build_model(cfg), jax.random.key(0)))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), leaf
        assert len(leaf.names) == leaf.value.ndim, leaf
        known = {name for name, _ in sharding.DEFAULT_RULES}
        assert all(n is None or n in known for n in leaf.names), leaf.names


def test_no_physical_mesh_axis_name_inside_the_layers():
    models_dir = pathlib.Path(sharding.__file__).parent / "models"
    for path in models_dir.glob("*.py"):
        text = path.read_text()
        for axis in sharding.MESH_AXES:
            assert not re.search(rf"[\"']{axis}[\"']", text), f"{path.name} names mesh axis {axis}"


def test_rules_string_round_trips_the_default_table():
    text = sharding.format_rules(sharding.DEFAULT_RULES)
    assert "activation_batch=data+fsdp" in text and "embed=fsdp" in text and ",kv=," in text
    assert sharding.parse_rules(text) == sharding.DEFAULT_RULES


def test_rules_string_remaps_only_the_listed_axes():
    rules = dict(sharding.parse_rules(" heads=none, embed=data+fsdp ,mlp=fsdp"))
    assert (rules["heads"], rules["embed"], rules["mlp"]) == (None, ("data", "fsdp"), "fsdp")
    assert rules["vocab"] == "tensor" and rules["activation_batch"] == ("data", "fsdp")
    order = [name for name, _ in sharding.parse_rules("mlp=")]
    assert order == [name for name, _ in sharding.DEFAULT_RULES]


@pytest.mark.parametrize("spec,match", [
    ("heads=tensor,hidden=fsdp", r"mesh\.rules='heads=tensor,hidden=fsdp'.*unknown logical axis "
                                 r"'hidden'; expected one of: activation_batch, .*relpos_buckets"),
    ("embed=model", r"unknown mesh axis 'model'; expected one of: data, fsdp, tensor"),
    ("embed=fsdp+fsdp", "a repeated mesh axis"),
    ("embed", r"'embed': expected logical=mesh"),
    ("mlp=tensor,mlp=fsdp", "'mlp' is mapped twice"),
])
def test_invalid_rules_name_the_value_and_the_valid_names(spec, match):
    with pytest.raises(ValueError, match=match):
        sharding.parse_rules(spec)


def test_configured_rules_shard_the_train_state_and_train_alike():
    from .test_train import synthetic_batches

    cfg = tiny("decoder", scan_layers=True, num_kv_heads=2)
    batch = synthetic_batches(cfg, 1)[0]
    optim = OptimConfig(learning_rate=1e-2, warmup_steps=0, schedule="constant")
    rules = sharding.parse_rules("embed=,mlp=fsdp,activation_mlp=fsdp")
    losses = {}
    for name, mesh, mesh_rules in [
            ("one", sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]), sharding.DEFAULT_RULES),
            ("custom", sharding.make_mesh(2, 2, 2), rules)]:
        model = build_model(cfg)
        state, shardings = create_train_state(model, make_optimizer(optim), 0, batch, mesh,
                                              mesh_rules)
        step = jit_train_step(model, optim, shardings, mesh, rules=mesh_rules)
        losses[name] = []
        with sharding.activate(mesh, mesh_rules):
            on_mesh = jax.device_put(batch, sharding.batch_sharding(mesh))
            for _ in range(2):
                state, metrics = step(state, on_mesh)
                losses[name].append(float(metrics["loss"]))
    np.testing.assert_allclose(losses["custom"], losses["one"], rtol=1e-4)
    wi = state.params["decoder"]["layers"]["mlp"]["wi"]["kernel"]  # [layers, embed, mlp]
    assert wi.sharding.spec == PartitionSpec(None, None, "fsdp")
    mu = state.opt_state[1][0].mu["decoder"]["layers"]["mlp"]["wi"]["kernel"]  # AdamW moment
    assert mu.sharding.spec == wi.sharding.spec


def _box(shape, names):
    return nn.LogicallyPartitioned(jax.numpy.zeros(shape), names)


@pytest.mark.parametrize("shape,names,row,col", [
    ((256, 512), ("embed", "mlp"), ("embed",), ("mlp",)),  # v_row keeps the smaller dim
    ((512, 256), ("mlp", "embed"), ("embed",), ("mlp",)),
    ((2, 256, 256), ("layers", "embed", "mlp"), ("layers", "embed"), ("layers", "mlp")),
])
def test_factored_moments_keep_the_axes_of_the_dimensions_they_keep(shape, names, row, col):
    boxed = {"dense": {"kernel": _box(shape, names)}, "norm": {"scale": _box((256,), ("norm",))}}
    optimizer = optax.adafactor(1e-2)
    state = optimizer.init(sharding.unbox_values(boxed))
    axes = sharding.optimizer_state_axes(state, boxed)
    factored = axes[0]
    v_row, v_col = factored.v_row["dense"]["kernel"], factored.v_col["dense"]["kernel"]
    assert (v_row.names, v_col.names) == (row, col)
    # The axes match what optax reduced: v_row is the mean over the dimension v_row lacks.
    kept = [shape[names.index(n)] for n in row]
    assert list(v_row.value.shape) == kept
    assert factored.v["norm"]["scale"].names == ("norm",)  # unfactored: the parameter's axes
    assert not isinstance(factored.v_row["norm"]["scale"], nn.LogicallyPartitioned)  # (1,)
    assert not isinstance(factored.count, nn.LogicallyPartitioned)
    mesh = sharding.make_mesh(2, 2, 2)
    specs = sharding.tree_shardings(axes, mesh)
    assert specs[0].v_row["dense"]["kernel"].spec == PartitionSpec(
        *[{"layers": None, "embed": "fsdp", "mlp": "tensor"}[n] for n in row])
    assert specs[0].count.spec == PartitionSpec()


def test_hybrid_shapes_split_data_and_fsdp_over_slices():
    assert sharding.hybrid_shapes((4, 2, 1), 2, 1) == ((2, 2, 1), (2, 1, 1))
    assert sharding.hybrid_shapes((2, 4, 1), 2, 2) == ((1, 2, 1), (2, 2, 1))
    with pytest.raises(ValueError, match=r"mesh\.dcn_fsdp=2 .*fsdp axis size 1"):
        sharding.hybrid_shapes((8, 1, 1), 1, 2)


class FakeSliceDevice:
    """A CPU device seen as part of a TPU slice (CPU devices have no slice_index)."""

    def __init__(self, device, slice_index):
        self.device, self.slice_index = device, slice_index
        self.id, self.platform, self.device_kind = device.id, "cpu", "cpu"
        self.process_index = device.process_index

    def __repr__(self):
        return f"slice{self.slice_index}/{self.id}"


def test_hybrid_mesh_puts_whole_slices_along_the_data_axis():
    # Two fake slices of 4 devices, listed interleaved: the grid must regroup them.
    fakes = [FakeSliceDevice(d, i % 2) for i, d in enumerate(jax.devices())]
    grid = sharding.hybrid_device_grid((4, 2, 1), 2, 1, fakes)
    assert grid.shape == (4, 2, 1)
    slices = np.vectorize(lambda d: d.slice_index)(grid)
    np.testing.assert_array_equal(slices[:2], 0)
    np.testing.assert_array_equal(slices[2:], 1)
    # The same layout as a real mesh: a data-parallel reduction across slices runs on it.
    mesh = jax.sharding.Mesh(np.vectorize(lambda d: d.device)(grid), sharding.MESH_AXES)
    x = jax.device_put(np.arange(16.0).reshape(8, 2),
                       jax.sharding.NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
    assert float(jax.jit(lambda a: a.sum())(x)) == float(np.arange(16.0).sum())
    with pytest.raises(ValueError, match=r"mesh\.dcn_data=2 x mesh\.dcn_fsdp=2 .* in 2 slices"):
        sharding.hybrid_device_grid((4, 2, 1), 2, 2, fakes)


def test_hybrid_mesh_on_devices_without_slices_groups_by_process():
    # One process of CPU devices is one group: a 2-slice mesh is refused with the reason.
    with pytest.raises(ValueError, match=r"in 1 processes \(the devices have no slice_index\)"):
        sharding.make_mesh(-1, 1, 1, dcn_data=2)
    assert sharding.make_mesh(-1, 1, 1, dcn_data=1).shape["data"] == 8
