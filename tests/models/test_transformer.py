"""Behaviour of the three families: causality, padding, packing, KV cache, scan and remat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.models import init_decode_cache, stack_layers, unstack_layers
from jaxlm.models.transformer import head_projection

from ._util import FAMILIES, logits, make, random_batch, tiny

OUTPUT_STREAM = {"decoder": "decoder_input_tokens", "encoder": "encoder_input_tokens",
                 "encoder_decoder": "decoder_input_tokens"}


@pytest.mark.parametrize("family,position", [("decoder", "rotary"), ("decoder", "learned"),
                                             ("encoder_decoder", "relative")])
def test_changing_token_j_never_changes_decoder_logits_before_j(family, position):
    cfg = tiny(family, position=position)
    batch = random_batch(cfg, 1, 10)
    model, params = make(cfg, batch)
    base = logits(model, params, batch)
    j = 6
    changed = dict(batch)
    changed["decoder_input_tokens"] = batch["decoder_input_tokens"].at[0, j].set(
        (batch["decoder_input_tokens"][0, j] + 7) % cfg.vocab_size)
    out = logits(model, params, changed)
    np.testing.assert_allclose(out[:, :j], base[:, :j], atol=1e-6)
    assert np.abs(out[:, j:] - base[:, j:]).max() > 1e-4


def test_encoder_logits_are_bidirectional():
    cfg = tiny("encoder")
    batch = random_batch(cfg, 1, 10)
    model, params = make(cfg, batch)
    changed = {"encoder_input_tokens": batch["encoder_input_tokens"].at[0, 8].set(5)}
    assert np.abs(logits(model, params, changed)[:, :8] - logits(model, params, batch)[:, :8]
                  ).max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_never_changes_logits_of_real_tokens(family):
    cfg = tiny(family, position="learned" if family == "encoder" else "rotary")
    batch = random_batch(cfg, 1, 8)
    model, params = make(cfg, batch)
    padded = {k: jnp.pad(v, ((0, 0), (0, 4))) for k, v in batch.items()}
    if family != "encoder":  # decoder padding is read from the targets (T5X convention)
        padded["decoder_target_tokens"] = padded["decoder_input_tokens"]
    np.testing.assert_allclose(logits(model, params, padded)[:, :8], logits(model, params, batch),
                               atol=1e-5)


def _pack(first: dict, second: dict) -> dict:
    """Two single-example batches -> one row with segment ids and restarting positions."""
    packed = {}
    for name in first:
        packed[name] = jnp.concatenate([first[name], second[name]], axis=1)
        stream = name.split("_")[0]
        len_a, len_b = first[name].shape[1], second[name].shape[1]
        packed[f"{stream}_segment_ids"] = jnp.array([[1] * len_a + [2] * len_b])
        packed[f"{stream}_positions"] = jnp.array([list(range(len_a)) + list(range(len_b))])
    return packed


@pytest.mark.parametrize("family,position", [("decoder", "learned"), ("decoder", "rotary"),
                                             ("encoder", "sinusoidal"),
                                             ("encoder_decoder", "relative")])
def test_each_packed_segment_equals_the_segment_alone(family, position):
    cfg = tiny(family, position=position)
    first, second = random_batch(cfg, 1, 7, seed=1), random_batch(cfg, 1, 5, seed=2)
    model, params = make(cfg, first)
    out = logits(model, params, _pack(first, second))
    np.testing.assert_allclose(out[:, :7], logits(model, params, first), atol=1e-5)
    np.testing.assert_allclose(out[:, 7:], logits(model, params, second), atol=1e-5)


def test_prefix_lm_tokens_see_the_whole_prefix():
    cfg = tiny("decoder")
    batch = random_batch(cfg, 1, 8)
    model, params = make(cfg, batch)
    prefix = dict(batch, decoder_causal_attention=jnp.array([[1, 1, 1, 1, 0, 0, 0, 0]]))
    changed = dict(prefix, decoder_input_tokens=batch["decoder_input_tokens"].at[0, 3].set(4))
    # Position 1 sees position 3 (both in the prefix); position 4 onwards never sees later tokens.
    assert np.abs(logits(model, params, changed)[:, 1] - logits(model, params, prefix)[:, 1]
                  ).max() > 1e-4
    later = dict(prefix, decoder_input_tokens=batch["decoder_input_tokens"].at[0, 6].set(4))
    np.testing.assert_allclose(logits(model, params, later)[:, :6],
                               logits(model, params, prefix)[:, :6], atol=1e-6)


def _decode_step_by_step(model, params, batch, family, chunk=1):
    length = batch["decoder_input_tokens"].shape[1]
    enc_len = batch["encoder_input_tokens"].shape[1] if family == "encoder_decoder" else None
    cache = init_decode_cache(model, 1, length, enc_len)
    encoded = None
    if family == "encoder_decoder":
        encoded = model.apply({"params": params}, batch, method=model.encode)
    outs = []
    for start in range(0, length, chunk):
        step = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"][:, start:start + chunk])
        variables = {"params": params, "cache": cache}
        if family == "encoder_decoder":
            out, mutated = model.apply(variables, step, encoded if start == 0 else None,
                                       decode=True, mutable=["cache"], method=model.decode)
        else:
            out, mutated = model.apply(variables, step, decode=True, mutable=["cache"])
        cache = mutated["cache"]
        outs.append(np.asarray(out))
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("family,changes", [
    ("decoder", dict(position="learned")),
    ("decoder", dict(position="rotary", num_kv_heads=2, scan_layers=True)),
    ("decoder", dict(position="relative")),
    ("encoder_decoder", dict(position="relative", num_kv_heads=1)),
])
def test_cached_decoding_matches_the_full_forward_pass(family, changes):
    cfg = tiny(family, **changes)
    batch = random_batch(cfg, 1, 6, decoder_length=9)
    model, params = make(cfg, batch)
    full = logits(model, params, batch)
    np.testing.assert_allclose(_decode_step_by_step(model, params, batch, family), full,
                               atol=1e-5)
    # A multi-token prefill followed by single steps gives the same logits too.
    np.testing.assert_allclose(_decode_step_by_step(model, params, batch, family, chunk=3), full,
                               atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_and_unrolled_layers_compute_the_same_function(family):
    cfg = tiny(family)
    batch = random_batch(cfg, 2, 8)
    model, params = make(cfg, batch)
    scanned_model, _ = make(cfg.replace(scan_layers=True), batch)
    scanned = stack_layers(params)
    assert scanned_model.apply({"params": scanned}, batch).shape == logits(model, params,
                                                                            batch).shape
    np.testing.assert_allclose(logits(scanned_model, scanned, batch), logits(model, params, batch),
                               atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(scanned), params)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_with_no_batch_dims"])
def test_remat_changes_nothing_numerically(policy):
    cfg = tiny("decoder", scan_layers=True, remat_policy="none")
    batch = random_batch(cfg, 2, 8)
    model, params = make(cfg, batch)
    remat_model, _ = make(cfg.replace(remat_policy=policy), batch)

    def loss(m):
        return lambda p: jnp.mean(m.apply({"params": p}, batch) ** 2)

    ref_loss, ref_grads = jax.value_and_grad(loss(model))(params)
    out_loss, out_grads = jax.value_and_grad(loss(remat_model))(params)
    np.testing.assert_allclose(out_loss, ref_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(out_grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("policy", ["full", "dots_with_no_batch_dims"])
def test_remat_with_dropout_gives_the_same_gradients_for_a_fixed_key(policy):
    cfg = tiny("decoder", scan_layers=True, remat_policy="none", dropout_rate=0.2,
               attention_dropout_rate=0.2)
    batch = random_batch(cfg, 2, 8)
    model, params = make(cfg, batch)
    remat_model, _ = make(cfg.replace(remat_policy=policy), batch)

    def loss(m, key):
        return lambda p: jnp.mean(m.apply({"params": p}, batch, deterministic=False,
                                          rngs={"dropout": key}) ** 2)

    ref_loss, ref_grads = jax.value_and_grad(loss(model, jax.random.key(3)))(params)
    out_loss, out_grads = jax.value_and_grad(loss(remat_model, jax.random.key(3)))(params)
    np.testing.assert_allclose(out_loss, ref_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(out_grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The masks are in play: another key gives another loss.
    other = loss(remat_model, jax.random.key(4))(params)
    assert abs(float(other) - float(ref_loss)) > 1e-4 * abs(float(ref_loss))


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_dot_product_attention_matches_xla_in_the_model(family):
    cfg = tiny(family, position="relative" if family == "encoder_decoder" else "rotary",
               num_kv_heads=2)
    batch = random_batch(cfg, 2, 8)
    model, params = make(cfg, batch)
    other, _ = make(cfg.replace(attention_impl="dot_product"), batch)
    np.testing.assert_allclose(logits(other, params, batch), logits(model, params, batch),
                               atol=1e-5)


def test_dropout_is_active_only_when_not_deterministic():
    cfg = tiny("decoder", dropout_rate=0.3, attention_dropout_rate=0.3)
    batch = random_batch(cfg, 1, 8)
    model, params = make(cfg, batch)
    a = model.apply({"params": params}, batch, deterministic=False,
                    rngs={"dropout": jax.random.key(1)})
    b = model.apply({"params": params}, batch, deterministic=False,
                    rngs={"dropout": jax.random.key(2)})
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
    # Deterministic: the same function as a model built without dropout, whatever key is given.
    plain, _ = make(cfg.replace(dropout_rate=0.0, attention_dropout_rate=0.0), batch)
    np.testing.assert_allclose(logits(model, params, batch, rngs={"dropout": jax.random.key(1)}),
                               logits(plain, params, batch), atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    cfg = tiny("decoder", dtype="bfloat16")
    batch = random_batch(cfg, 1, 8)
    model, params = make(cfg, batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    out = model.apply({"params": params}, batch)
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("changes", [
    {}, dict(tie_embeddings=False, output_bias=True), dict(scale_tied_logits=True)])
def test_head_projection_reproduces_the_logits(changes):
    cfg = tiny("decoder", **changes)
    batch = random_batch(cfg, 2, 8)
    model, params = make(cfg, batch)
    hidden = model.apply({"params": params}, batch, return_hidden=True)
    features, matrix, bias = model.apply({"params": params}, hidden, method=head_projection)
    spec = "bld,vd->blv" if cfg.tie_embeddings else "bld,dv->blv"
    projected = jnp.einsum(spec, features, matrix) + (0.0 if bias is None else bias)
    np.testing.assert_allclose(projected, logits(model, params, batch), rtol=1e-5, atol=1e-6)
