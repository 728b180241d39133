"""Masks, attention kernels and T5 relative-position buckets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.models import attention as attn
from jaxlm.models import init_decode_cache
from jaxlm.models import positions as positions_lib
from jaxlm.models.positions import apply_rotary, relative_position_bucket, rotary_angles
from jaxlm.sharding import activate, make_mesh

from ._util import logits, make, random_batch, tiny


def test_self_attention_mask_combines_padding_segments_and_causality():
    valid = jnp.array([[1, 1, 1, 1, 0]], bool)
    segments = jnp.array([[1, 1, 2, 2, 0]])
    mask = np.asarray(attn.self_attention_mask(valid, segments, causal=True))[0, 0]
    expected = np.array([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ], bool)
    np.testing.assert_array_equal(mask, expected)
    bidir = np.asarray(attn.self_attention_mask(valid, segments, causal=False))[0, 0]
    np.testing.assert_array_equal(bidir[2], [0, 0, 1, 1, 0])


def test_prefix_lm_mask_is_bidirectional_on_the_prefix_only():
    valid = jnp.ones((1, 4), bool)
    prefix = jnp.array([[1, 1, 0, 0]])
    mask = np.asarray(attn.self_attention_mask(valid, None, True, prefix))[0, 0]
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(mask, expected)


def test_cross_attention_mask_respects_segments_and_encoder_padding():
    mask = attn.cross_attention_mask(jnp.ones((1, 3), bool), jnp.array([[1, 1, 1, 0]], bool),
                                     jnp.array([[1, 2, 2]]), jnp.array([[1, 1, 2, 0]]))
    np.testing.assert_array_equal(np.asarray(mask)[0, 0],
                                  [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_xla_and_dot_product_kernels_agree_with_gqa_mask_and_bias(num_kv_heads):
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (2, 5, 4, 8))
    k = jax.random.normal(keys[1], (2, 7, num_kv_heads, 8))
    v = jax.random.normal(keys[2], (2, 7, num_kv_heads, 8))
    bias = jax.random.normal(keys[3], (1, 4, 5, 7))
    mask = jax.random.bernoulli(keys[0], 0.7, (2, 1, 5, 7)).at[..., 0].set(True)
    ref = attn.attention_kernel(q, k, v, mask, bias, 8 ** -0.5, "xla")
    out = attn.attention_kernel(q, k, v, mask, bias, 8 ** -0.5, "dot_product")
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # Against a plain per-head softmax written out here.
    rep = 4 // num_kv_heads
    kk, vv = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    logits = jnp.einsum("bqnd,bknd->bnqk", q, kk) * 8 ** -0.5 + bias
    probs = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)
    np.testing.assert_allclose(ref, jnp.einsum("bnqk,bknd->bqnd", probs, vv), atol=1e-5)


def test_fully_masked_query_gives_finite_output():
    q = k = v = jnp.ones((1, 2, 1, 4))
    mask = jnp.zeros((1, 1, 2, 2), bool)
    assert np.isfinite(np.asarray(attn.attention_kernel(q, k, v, mask, None, 0.5, "xla"))).all()


def _t5_bucket(rel: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """Mesh TensorFlow's _relative_position_bucket, written out for one scalar."""
    ret, n = 0, -rel
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                          * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_match_t5(bidirectional):
    rel = np.arange(-300, 301)
    ours = np.asarray(relative_position_bucket(jnp.asarray(rel), bidirectional, 32, 128))
    ref = np.array([_t5_bucket(int(r), bidirectional, 32, 128) for r in rel])
    np.testing.assert_array_equal(ours, ref)


def test_rotary_dot_products_depend_only_on_relative_offset():
    x = jax.random.normal(jax.random.key(1), (1, 2, 1, 16))
    q, k = x[:, :1], x[:, 1:]

    def score(pq, pk):
        rq = apply_rotary(q, rotary_angles(jnp.array([[pq]]), 1, 16, 10000.0))
        rk = apply_rotary(k, rotary_angles(jnp.array([[pk]]), 1, 16, 10000.0))
        return float(jnp.sum(rq * rk))

    assert score(5, 2) == pytest.approx(score(105, 102), rel=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), rel=1e-3)


def test_rotary_tables_of_implicit_positions_equal_the_angles_of_explicit_ones(monkeypatch):
    explicit = rotary_angles(jnp.broadcast_to(jnp.arange(40), (3, 40)), 40, 16, 10000.0)
    table = rotary_angles(None, 40, 16, 10000.0)  # numpy, at trace time
    monkeypatch.setattr(positions_lib, "_MAX_CONSTANT_ANGLES", 0)
    in_graph = rotary_angles(None, 40, 16, 10000.0)  # a long sequence's path
    for got in (table, in_graph):
        for g, e in zip(got, explicit):
            assert g.shape == (1, 40, 1, 8) and e.shape == (3, 40, 1, 8)
            np.testing.assert_allclose(np.broadcast_to(g, e.shape), e, atol=1e-5)


def test_auto_attention_is_the_einsum_off_gpu_and_cudnn_needs_16_bit():
    q = jnp.ones((1, 4, 2, 8), jnp.bfloat16)
    assert attn.resolve_impl("auto", q, None, dropout=False) == (
        "dot_product" if jax.default_backend() == "gpu" else "xla")
    assert attn.resolve_impl("auto", q.astype(jnp.float32), None, dropout=False) == "xla"
    assert attn.resolve_impl("auto", q, jnp.zeros((1, 2, 4, 4)), dropout=False) == "xla"
    assert attn.resolve_impl("xla", q, None, dropout=False) == "xla"


def test_the_causal_hint_never_changes_the_result():
    keys = jax.random.split(jax.random.key(5), 3)
    q, k, v = (jax.random.normal(key, (2, 6, 2, 8)) for key in keys)
    valid = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    mask = attn.self_attention_mask(valid, None, causal=True)
    for impl in ("xla", "dot_product", "auto"):
        hinted = attn.attention_kernel(q, k, v, mask, None, 8 ** -0.5, impl, causal=True)
        plain = attn.attention_kernel(q, k, v, mask, None, 8 ** -0.5, "xla")
        np.testing.assert_allclose(hinted, plain, atol=1e-5)


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_causal_split_matches_the_full_square_in_value_and_gradient(num_kv_heads):
    # Long enough for the causal einsum to run in two query halves; packing, padding, grouped
    # heads and a relative-position bias must all come through the split unchanged.
    length = 2 * attn._CAUSAL_SPLIT_MIN_LENGTH
    keys = jax.random.split(jax.random.key(6), 4)
    q = jax.random.normal(keys[0], (2, length, 4, 8))
    k, v = (jax.random.normal(key, (2, length, num_kv_heads, 8)) for key in keys[1:3])
    bias = jax.random.normal(keys[3], (1, 4, length, length))
    segments = jnp.stack([jnp.where(jnp.arange(length) < length // 3, 1, 2),
                          jnp.where(jnp.arange(length) < length - 9, 1, 0)])
    mask = attn.self_attention_mask(segments > 0, segments, causal=True)

    def run(causal):
        fn = lambda q, k, v, b: jnp.sum(jnp.sin(attn.attention_kernel(
            q, k, v, mask, b, 8 ** -0.5, "xla", causal=causal)))
        return jax.value_and_grad(fn, argnums=(0, 1, 2, 3))(q, k, v, bias)

    (split_value, split_grads), (full_value, full_grads) = run(True), run(False)
    np.testing.assert_allclose(split_value, full_value, rtol=1e-5)
    for split_grad, full_grad in zip(split_grads, full_grads):
        np.testing.assert_allclose(split_grad, full_grad, atol=1e-5)


def _splash_case(case: str, length: int = 256):
    """(valid, segment ids or None, causal) of one mask kind splash must reproduce."""
    pos = jnp.arange(length)
    real = jnp.stack([pos < length, pos < length - 37])  # the second row ends in padding
    packed = jnp.stack([jnp.where(pos < 100, 1, 2), jnp.where(pos < 60, 1, 3)])
    return {"causal": (jnp.ones((2, length), bool), None, True),
            "bidirectional": (jnp.ones((2, length), bool), None, False),
            "packed causal": (packed > 0, packed, True),
            "padded causal": (real, None, True),
            "packed and padded bidirectional": (real, jnp.where(real, packed, 0), False)}[case]


@pytest.mark.parametrize("num_kv_heads", [4, 2])
@pytest.mark.parametrize("case", ["causal", "bidirectional", "packed causal", "padded causal",
                                  "packed and padded bidirectional"])
def test_splash_matches_the_einsum_in_value_and_gradient(case, num_kv_heads):
    # Off TPU the kernel runs in Pallas' interpret mode: the same kernel code, on CPU.
    valid, segments, causal = _splash_case(case)
    keys = jax.random.split(jax.random.key(7), 3)
    q = jax.random.normal(keys[0], (2, valid.shape[1], 4, 16))
    k, v = (jax.random.normal(key, (2, valid.shape[1], num_kv_heads, 16)) for key in keys[1:])
    mask = attn.self_attention_mask(valid, segments, causal)
    ids = attn.kernel_segment_ids(valid, segments)

    def run(impl):
        # Padding queries' outputs are never used (splash lets them see the other padding),
        # so the loss weighs real tokens only.
        fn = lambda q, k, v: jnp.sum(jnp.sin(attn.attention_kernel(
            q, k, v, mask, None, 16 ** -0.5, impl, causal=causal, segment_ids_BxL=ids))
            * valid[:, :, None, None])
        return jax.value_and_grad(fn, argnums=(0, 1, 2))(q, k, v)

    (value, grads), (ref_value, ref_grads) = run("splash"), run("xla")
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, atol=2e-5)


def test_kernel_segment_ids_fold_padding_into_segment_zero():
    valid = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(attn.kernel_segment_ids(valid, None), [[1, 1, 1, 0], [1] * 4])
    np.testing.assert_array_equal(attn.kernel_segment_ids(valid, jnp.array([[1, 2, 2, 0],
                                                                            [1, 1, 2, 3]])),
                                  [[1, 2, 2, 0], [1, 1, 2, 3]])


def test_auto_selects_splash_on_tpu_only_where_it_applies(monkeypatch):
    monkeypatch.setattr(attn, "platform", lambda: "tpu")
    q = jnp.ones((2, 256, 4, 16), jnp.bfloat16)
    ids = jnp.ones((2, 256), jnp.int32)
    auto = lambda q=q, k=q, bias=None, dropout=False, ids=ids: attn.resolve_impl(
        "auto", q, bias, dropout, k, ids)
    assert auto() == "splash"
    assert auto(bias=jnp.zeros((1, 4, 256, 256))) == "xla"  # T5's relative bias
    assert auto(dropout=True) == "xla"
    assert auto(ids=None) == "xla"  # prefix-LM, cross-attention, decoding
    assert auto(q=q[:, :100], k=q[:, :100], ids=ids[:, :100]) == "xla"  # not a block multiple
    assert auto(q=q[:, :1]) == "xla"  # one query against a cache
    monkeypatch.setattr(attn, "platform", lambda: "gpu")
    assert auto() == "dot_product"


def test_explicit_splash_that_cannot_run_is_a_clear_error():
    q = jnp.ones((1, 128, 2, 8))
    with pytest.raises(ValueError, match="model.attention_impl='splash'.*bias"):
        attn.resolve_impl("splash", q, jnp.zeros((1, 2, 128, 128)), False, q, q[..., 0, 0])
    with pytest.raises(ValueError, match="model.attention_impl='splash'.*prefix-LM"):
        attn.resolve_impl("splash", q, None, False, q, None)


def _packed_and_padded(cfg, length: int = 128) -> dict:
    """Row 0 packs two segments, row 1 ends in padding (segment id 0)."""
    batch = random_batch(cfg, 2, length)
    pos = np.arange(length)
    segments = np.stack([np.where(pos < 50, 1, 2), np.where(pos < length - 29, 1, 0)])
    positions = np.stack([np.where(pos < 50, pos, pos - 50), pos])
    stream = "encoder" if cfg.family == "encoder" else "decoder"
    return dict(batch, **{f"{stream}_segment_ids": jnp.asarray(segments),
                          f"{stream}_positions": jnp.asarray(positions)})


@pytest.mark.parametrize("family", ["decoder", "encoder"])
def test_splash_matches_the_einsum_in_the_model(family):
    cfg = tiny(family, num_kv_heads=2, attention_impl="xla")
    batch = _packed_and_padded(cfg)
    model, params = make(cfg, batch)
    other, _ = make(cfg.replace(attention_impl="splash"), batch)
    stream = "encoder" if family == "encoder" else "decoder"
    real = np.asarray(batch[f"{stream}_segment_ids"] > 0)
    np.testing.assert_allclose(logits(other, params, batch)[real], logits(model, params, batch)[real],
                               atol=1e-4)


def test_splash_parameter_gradients_match_the_einsum_with_scanned_rematerialised_layers():
    cfg = tiny("decoder", num_kv_heads=2, attention_impl="xla", scan_layers=True)
    batch = _packed_and_padded(cfg)
    model, params = make(cfg, batch)
    other, _ = make(cfg.replace(attention_impl="splash"), batch)
    real = batch["decoder_segment_ids"][..., None] > 0
    grad = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(jnp.where(
        real, m.apply({"params": p}, batch), 0.0) ** 2) / 1000))(params)
    for got, want in zip(jax.tree.leaves(grad(other)), jax.tree.leaves(grad(model))):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_splash_model_rejects_prefix_lm_and_relative_bias_but_auto_falls_back(monkeypatch):
    cfg = tiny("decoder", attention_impl="splash")
    batch = random_batch(cfg, 1, 128)
    model, params = make(cfg, batch)
    prefix = dict(batch, decoder_causal_attention=jnp.zeros((1, 128), jnp.int32).at[:, :40].set(1))
    with pytest.raises(ValueError, match="model.attention_impl='splash'.*prefix-LM"):
        logits(model, params, prefix)
    t5 = tiny("encoder_decoder", position="relative", attention_impl="splash")
    with pytest.raises(ValueError, match="model.attention_impl='splash'.*bias"):
        make(t5, random_batch(t5, 1, 128))
    # `auto` on a TPU takes the einsum for both, with the same logits as `xla`.
    monkeypatch.setattr(attn, "platform", lambda: "tpu")
    for config, inputs in ((cfg, prefix), (t5, random_batch(t5, 1, 128))):
        auto, params = make(config.replace(attention_impl="auto"), inputs)
        plain, _ = make(config.replace(attention_impl="xla"), inputs)
        np.testing.assert_array_equal(logits(auto, params, inputs), logits(plain, params, inputs))


def test_a_splash_model_cross_attends_and_decodes_with_the_other_kernels():
    # Cross-attention and KV-cache decoding cannot take splash; a splash model still runs them.
    cfg = tiny("encoder_decoder", position="rotary", attention_impl="splash")
    batch = random_batch(cfg, 1, 128, decoder_length=128)
    model, params = make(cfg, batch)
    plain, _ = make(cfg.replace(attention_impl="xla"), batch)
    full = logits(model, params, batch)
    np.testing.assert_allclose(full, logits(plain, params, batch), atol=1e-4)
    cache = init_decode_cache(model, 1, 128, 128)
    encoded = model.apply({"params": params}, batch, method=model.encode)
    steps = []
    for start in (0, 64):  # two 64-token prefills through the cache
        step = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"][:, start:start + 64])
        out, mutated = model.apply({"params": params, "cache": cache}, step,
                                   encoded if start == 0 else None, decode=True,
                                   mutable=["cache"], method=model.decode)
        cache = mutated["cache"]
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


@pytest.mark.parametrize("num_kv_heads", [2, 1])
def test_splash_under_a_mesh_is_shard_mapped_over_batch_and_heads(num_kv_heads):
    # The Pallas call cannot be partitioned by the compiler: it runs per (batch, heads) shard.
    # With one kv head the heads cannot split over `tensor` and stay whole.
    mesh = make_mesh(2, 2, 2)
    valid, segments, causal = _splash_case("packed causal", 128)
    valid, segments = jnp.tile(valid, (2, 1)), jnp.tile(segments, (2, 1))
    keys = jax.random.split(jax.random.key(8), 3)
    q = jax.random.normal(keys[0], (4, 128, 4, 16))
    k, v = (jax.random.normal(key, (4, 128, num_kv_heads, 16)) for key in keys[1:])
    mask = attn.self_attention_mask(valid, segments, causal)
    ids = attn.kernel_segment_ids(valid, segments)
    fn = lambda impl: jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(jnp.sin(
        attn.attention_kernel(q, k, v, mask, None, 0.25, impl, causal=True,
                              segment_ids_BxL=ids))), argnums=(0, 1, 2)))
    with activate(mesh):
        (value, grads) = fn("splash")(q, k, v)
        assert "shard_map" in str(jax.make_jaxpr(fn("splash"))(q, k, v))
    ref_value, ref_grads = fn("xla")(q, k, v)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, atol=2e-5)
