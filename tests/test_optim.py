"""Schedules, weight-decay masks and optimizer updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from jaxlm import sharding
from jaxlm.optim import (AdafactorConfig, OptimConfig, decay_mask, learning_rate_schedule,
                         make_optimizer)

from .models._util import make, tiny


def lr(cfg, step):
    return float(learning_rate_schedule(cfg)(jnp.asarray(step)))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd", "constant"])
def test_warmup_is_linear_to_the_peak(schedule):
    cfg = OptimConfig(learning_rate=1e-3, warmup_steps=10, total_steps=100, schedule=schedule)
    assert lr(cfg, 0) == 0.0
    assert lr(cfg, 5) == pytest.approx(5e-4)
    assert lr(cfg, 10) == pytest.approx(1e-3)


def test_decays_end_at_the_final_fraction():
    for schedule in ("cosine", "linear", "wsd"):
        cfg = OptimConfig(learning_rate=1e-3, warmup_steps=10, total_steps=100,
                          schedule=schedule, final_lr_fraction=0.1)
        assert lr(cfg, 100) == pytest.approx(1e-4, rel=1e-4), schedule
    cosine = OptimConfig(learning_rate=1e-3, warmup_steps=10, total_steps=110, schedule="cosine",
                         final_lr_fraction=0.0)
    assert lr(cosine, 60) == pytest.approx(5e-4, rel=1e-4)  # half way down the cosine


def test_wsd_is_stable_until_its_decay_phase():
    cfg = OptimConfig(learning_rate=1e-3, warmup_steps=10, total_steps=100, schedule="wsd",
                      decay_fraction=0.2, final_lr_fraction=0.0)
    assert lr(cfg, 79) == pytest.approx(1e-3)
    assert lr(cfg, 90) == pytest.approx(5e-4, rel=1e-3)


def test_rsqrt_is_t5s_inverse_square_root():
    cfg = OptimConfig(learning_rate=0.01, warmup_steps=10_000, total_steps=100, schedule="rsqrt")
    assert lr(cfg, 0) == pytest.approx(0.01)
    assert lr(cfg, 40_000) == pytest.approx(0.005)


def test_decay_mask_spares_norms_biases_and_embeddings():
    cfg = tiny("encoder", use_bias=True, norm="layernorm", norm_bias=True, output_bias=True,
               mlm_head_transform=True, position="learned")
    _, params = make(cfg)
    mask = decay_mask(params)
    layer = mask["encoder"]["layers_0"]
    assert layer["mlp"]["wi"]["kernel"] and layer["self_attention"]["query"]["kernel"]
    assert not layer["mlp"]["wi"]["bias"] and not layer["mlp_norm"]["scale"]
    assert not mask["token_embed"]["embedding"] and not mask["head"]["output_bias"]
    assert decay_mask(params, decay_embeddings=True)["token_embed"]["embedding"]


def test_adamw_decays_only_masked_weights_and_clips():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
    cfg = OptimConfig(learning_rate=0.1, warmup_steps=0, total_steps=10, schedule="constant",
                      weight_decay=0.5, grad_clip_norm=1.0)
    opt = make_optimizer(cfg)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["dense"]["bias"], 0.0)
    huge = jax.tree.map(lambda x: 1e6 * jnp.ones_like(x), params)
    clipped, _ = optax.clip_by_global_norm(1.0).update(huge, None)
    assert float(optax.global_norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def test_adafactor_reduces_a_quadratic():
    params = {"w": jnp.full((4, 3), 2.0)}
    cfg = OptimConfig(name="adafactor", learning_rate=0.05, warmup_steps=0, total_steps=50,
                      schedule="constant", weight_decay=0.0)
    opt = make_optimizer(cfg)
    state = opt.init(params)
    loss = lambda p: jnp.sum(p["w"] ** 2)
    start = float(loss(params))
    for _ in range(20):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < 0.5 * start


@pytest.mark.parametrize("changes,field", [
    (dict(learning_rate=-1e-3), "optim.learning_rate"), (dict(schedule="step"), "optim.schedule"),
    (dict(name="sgd"), "optim.name"), (dict(warmup_steps=2000, total_steps=100),
                                       "optim.warmup_steps"),
    (dict(b2=1.0), "optim.b2"), (dict(weight_decay=-0.1), "optim.weight_decay"),
])
def test_invalid_optimizer_settings_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        OptimConfig(**changes)


T5_ADAFACTOR = dict(multiply_by_parameter_scale=True, decay_rate=0.8, clipping_threshold=1.0,
                    momentum=None, factored=True)


def test_adafactor_defaults_are_t5s_and_match_optax():
    assert {k: getattr(AdafactorConfig(), k) for k in T5_ADAFACTOR} == T5_ADAFACTOR
    cfg = OptimConfig(name="adafactor", learning_rate=1e-2, warmup_steps=0, schedule="constant",
                      weight_decay=0.0, grad_clip_norm=0.0)
    ours, reference = make_optimizer(cfg), optax.adafactor(1e-2, **T5_ADAFACTOR)
    params = {"w": jnp.linspace(-1.0, 1.0, 256 * 130).reshape(256, 130), "b": jnp.ones((130,))}
    states = [ours.init(params), reference.init(params)]
    for step in range(3):
        grads = jax.tree.map(lambda p: jnp.cos(p * (step + 1)), params)
        (a, states[0]), (b, states[1]) = (ours.update(grads, states[0], params),
                                          reference.update(grads, states[1], params))
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)
        params = optax.apply_updates(params, a)
    assert states[0][0].v_row["w"].shape == (130,)  # factored: the largest dim reduced


def test_adafactor_weight_decay_is_decoupled_and_scaled_by_the_learning_rate():
    cfg = OptimConfig(name="adafactor", learning_rate=1e-2, warmup_steps=0, schedule="constant",
                      weight_decay=0.1, grad_clip_norm=0.0)
    params = {"dense": {"kernel": jnp.full((4, 4), 2.0), "bias": jnp.full((4,), 2.0)}}
    opt = make_optimizer(cfg)
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -1e-2 * 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(updates["dense"]["bias"], 0.0)  # masked, like AdamW


@pytest.mark.parametrize("field,value", [("decay_rate", 1.5), ("clipping_threshold", -1.0),
                                         ("momentum", 1.0), ("min_dim_size_to_factor", 0),
                                         ("eps", 0.0)])
def test_invalid_adafactor_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"optim\.adafactor\.{field}="):
        AdafactorConfig(**{field: value})


def adafactor_run(mesh, batches, optim):
    from .test_train import run

    return run(CFG, batches, mesh, optim=optim)


CFG = tiny("decoder", scan_layers=True, num_kv_heads=2)
# min_dim_size_to_factor 32: the tiny model's matrices are factored as a real one's are.
ADAFACTOR = OptimConfig(name="adafactor", learning_rate=1e-2, warmup_steps=0, schedule="rsqrt",
                        weight_decay=0.0, grad_clip_norm=0.0,
                        adafactor=AdafactorConfig(min_dim_size_to_factor=32))


def test_adafactor_trains_alike_on_one_device_and_a_2x2x2_mesh():
    from .test_train import synthetic_batches

    batches = synthetic_batches(CFG, 4)
    single, _ = adafactor_run(sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]), batches,
                              ADAFACTOR)
    meshed, state = adafactor_run(sharding.make_mesh(2, 2, 2), batches, ADAFACTOR)
    np.testing.assert_allclose(meshed, single, rtol=1e-3)
    assert single[-1] < single[0]
    factored = state.opt_state[0]
    wi = state.params["decoder"]["layers"]["mlp"]["wi"]["kernel"]  # [layers, embed, mlp]
    v_row = factored.v_row["decoder"]["layers"]["mlp"]["wi"]["kernel"]  # [layers, embed]
    v_col = factored.v_col["decoder"]["layers"]["mlp"]["wi"]["kernel"]  # [layers, mlp]
    assert wi.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
    assert (v_row.sharding.spec, v_col.sharding.spec) == (PartitionSpec(None, "fsdp"),
                                                          PartitionSpec(None, "tensor"))
    assert factored.count.sharding.spec == PartitionSpec()
