"""Mesh construction and sharded execution on 8 fake CPU devices."""

import pathlib
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxlm import sharding
from jaxlm.models import build_model, init_params

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
    sharded, shardings = sharding.init_sharded(
        lambda: init_params(model, jax.random.key(0), batch), mesh)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), sharded,
                 params)  # the same init, computed straight into its shardings
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
