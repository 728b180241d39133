"""Schedules, weight-decay masks and optimizer updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlm.optim import OptimConfig, decay_mask, learning_rate_schedule, make_optimizer

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
