"""The sharded train step: mesh invariance, exact gradient accumulation, learning."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxlm import sharding
from jaxlm.models import build_model, init_params
from jaxlm.objectives import shift_right
from jaxlm.optim import OptimConfig, make_optimizer
from jaxlm.train import create_train_state, eval_step, jit_train_step

from .models._util import tiny

OPTIM = OptimConfig(learning_rate=3e-3, warmup_steps=2, total_steps=20, weight_decay=0.01)


def synthetic_batches(cfg, num, batch_size=8, length=16, seed=0):
    """Batches of a learnable pattern (each row counts up from a random start)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        start = rng.integers(3, cfg.vocab_size - length - 1, (batch_size, 1))
        tokens = (start + np.arange(length)).astype(np.int32)
        weights = np.ones_like(tokens)
        weights[:, : length // 4] = 0  # loss weights must matter
        if cfg.family == "encoder":
            batch = {"encoder_input_tokens": np.where(weights, 3, tokens),
                     "encoder_target_tokens": tokens, "encoder_loss_weights": weights}
        else:
            batch = {"decoder_input_tokens": np.stack([shift_right(t) for t in tokens]),
                     "decoder_target_tokens": tokens, "decoder_loss_weights": weights}
            if cfg.family == "encoder_decoder":
                batch["encoder_input_tokens"] = tokens[:, ::-1].copy()
        out.append({k: jnp.asarray(v) for k, v in batch.items()})
    return out


def run(cfg, batches, mesh, micro_batches=1, optim=OPTIM, start=None):
    """Losses and final state; `start`: initial params (cast to cfg.param_dtype) instead of
    cfg's own initialisation."""
    model, optimizer = build_model(cfg), make_optimizer(optim)
    state, shardings = create_train_state(model, optimizer, 0, batches[0], mesh)
    if start is not None:
        def restart(state):
            params = jax.tree.map(lambda x, p: x.astype(p.dtype), start, state.params)
            return state.replace(params=params, opt_state=optimizer.init(params))
        state = jax.jit(restart, out_shardings=shardings)(state)
    step = jit_train_step(model, optim, shardings, mesh, micro_batches=micro_batches)
    losses = []
    with sharding.activate(mesh):
        for batch in batches:
            state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
            losses.append(float(metrics["loss"]))
    return losses, state


@pytest.mark.parametrize("family", ["decoder", "encoder", "encoder_decoder"])
def test_one_device_and_a_2x2x2_mesh_give_the_same_losses(family):
    cfg = tiny(family, scan_layers=True, num_kv_heads=2,
               position="relative" if family == "encoder_decoder" else "rotary")
    batches = synthetic_batches(cfg, 4)
    single, _ = run(cfg, batches, sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    mesh = sharding.make_mesh(2, 2, 2)
    meshed, state = run(cfg, batches, mesh)
    np.testing.assert_allclose(meshed, single, rtol=1e-4)
    specs = assert_params_follow_the_rules(state.params, cfg, batches[0], mesh)
    stack = "decoder" if family != "encoder" else "encoder"
    # Not all replicated: the MLP input kernel [layers, embed, mlp] is split both ways.
    assert specs[stack]["layers"]["mlp"]["wi"]["kernel"] == (None, "fsdp", "tensor")


def _padded(spec, ndim):
    return tuple(spec) + (None,) * (ndim - len(spec))


def assert_params_follow_the_rules(params, cfg, batch, mesh):
    """Every parameter's PartitionSpec is what the logical axis rules give its logical names
    (a dimension the mesh axes do not divide stays whole); returns the specs as tuples."""
    boxed = jax.eval_shape(lambda: init_params(build_model(cfg), jax.random.key(0), batch))
    logical = nn.get_partition_spec(boxed)

    def check(names, x):
        want = []
        for axes, dim in zip(_padded(nn.logical_to_mesh_axes(names, sharding.DEFAULT_RULES),
                                     x.ndim), x.shape):
            size = int(np.prod([mesh.shape[a] for a in
                                ((axes,) if isinstance(axes, str) else axes or ())]))
            want.append(axes if dim % size == 0 else None)
        got = _padded(x.sharding.spec, x.ndim)
        assert got == tuple(want), (names, got, want)
        assert x.sharding.mesh.shape == mesh.shape
        return got

    return jax.tree.map(check, logical, params, is_leaf=lambda x: isinstance(x, PartitionSpec))


def test_four_micro_batches_equal_one_step_on_the_whole_batch():
    cfg = tiny("decoder", scan_layers=True)
    batches = synthetic_batches(cfg, 3, batch_size=32)
    mesh = sharding.make_mesh(2, 4, 1)  # each micro-batch: one row per device
    whole, whole_state = run(cfg, batches, mesh)
    accumulated, acc_state = run(cfg, batches, mesh, micro_batches=4)
    np.testing.assert_allclose(accumulated, whole, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 acc_state.params, whole_state.params)


def test_training_reduces_the_loss_and_eval_agrees():
    cfg = tiny("decoder", scan_layers=True)
    batches = synthetic_batches(cfg, 40)
    optim = OptimConfig(learning_rate=1e-2, warmup_steps=5, total_steps=40, schedule="constant")
    losses, state = run(cfg, batches, sharding.make_mesh(-1, 1, 1), optim=optim)
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
    sums = eval_step(state.params, batches[-1], model=build_model(cfg))
    assert float(sums["weight_sum"]) == 8 * 12
    assert np.isfinite(float(sums["loss_sum"]))


@pytest.mark.parametrize("family,changes", [
    ("decoder", {}),
    ("encoder", dict(tie_embeddings=False, output_bias=True, mlm_head_transform=True)),
])
def test_the_chunked_loss_trains_exactly_like_the_logits_loss(family, changes):
    cfg = tiny(family, scan_layers=True, **changes)
    batches = synthetic_batches(cfg, 3)
    mesh = sharding.make_mesh(2, 4, 1)  # the chunked loss runs per device on one row each
    states = []
    for fused in (True, False):
        model = build_model(cfg)
        state, shardings = create_train_state(model, make_optimizer(OPTIM), 0, batches[0], mesh)
        step = jit_train_step(model, OPTIM, shardings, mesh, z_loss=1e-3, label_smoothing=0.1,
                              fused_loss=fused)
        with sharding.activate(mesh):
            for batch in batches:
                state, metrics = step(state, batch)
        states.append((state, metrics))
    (fused_state, fused_metrics), (plain_state, plain_metrics) = states
    for key in ("loss", "accuracy", "grad_norm"):
        np.testing.assert_allclose(fused_metrics[key], plain_metrics[key], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 fused_state.params, plain_state.params)
    model = build_model(cfg)
    fused_eval = eval_step(fused_state.params, batches[0], model=model)
    plain_eval = eval_step(fused_state.params, batches[0], model=model, fused_loss=False)
    for key in fused_eval:
        np.testing.assert_allclose(fused_eval[key], plain_eval[key], rtol=1e-5)


def test_the_step_loop_makes_no_host_transfers():
    cfg = tiny("decoder", scan_layers=True)
    mesh = sharding.make_mesh(-1, 1, 1)
    batches = [jax.device_put(b, sharding.batch_sharding(mesh))
               for b in synthetic_batches(cfg, 3)]
    model = build_model(cfg)
    state, shardings = create_train_state(model, make_optimizer(OPTIM), 0, batches[0], mesh)
    step = jit_train_step(model, OPTIM, shardings, mesh)
    with sharding.activate(mesh):
        state, _ = step(state, batches[0])  # compiles
        with jax.transfer_guard("disallow"):
            for batch in batches[1:]:
                state, metrics = step(state, batch)
            host_batch = {k: np.asarray(v) for k, v in batches[0].items()}
            with pytest.raises(Exception, match="[Dd]isallowed"):  # the guard does watch
                step(state, host_batch)
    assert np.isfinite(float(metrics["loss"]))


def test_bfloat16_compute_tracks_the_float32_run_on_the_mesh():
    # Model dtype bfloat16 (activations and matmul inputs), params and optimizer state float32.
    # Over six steps the losses differed from the float32 run's by at most 5e-5 (relative); the
    # tolerance, 1e-3, leaves room for other CPUs while still catching a loss computed in bf16
    # (2**-9 = 2e-3 rounding of a loss near 6).
    cfg = tiny("decoder", scan_layers=True)
    batches = synthetic_batches(cfg, 6)
    mesh = sharding.make_mesh(2, 2, 2)
    f32, _ = run(cfg, batches, mesh)
    bf16, state = run(cfg.replace(dtype="bfloat16"), batches, mesh)
    assert {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(bf16, f32, rtol=1e-3)
    assert bf16 != f32  # the compute did run in bfloat16
    assert bf16[-1] < bf16[0]
