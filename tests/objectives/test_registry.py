"""Tests for jaxlm.objectives.registry: names, binding, the tf.data form, argument checks."""

import numpy as np
import pytest

from jaxlm import objectives as O

from ._util import MASK_ID, MODE_IDS, SPECIALS, VOCAB


_KWARGS = {
    "clm": {},
    "mlm": {"vocab_size": 1000, "mask_id": MASK_ID, "special_ids": SPECIALS},
    "span_corruption": {"vocab_size": VOCAB, "noise_density": 0.15, "mean_noise_span_length": 3.0},
    "prefix_lm": {},
    "prefix_lm_encoder_decoder": {},
    "mlm_encoder_decoder": {"vocab_size": 1000, "mask_id": MASK_ID, "special_ids": SPECIALS},
    "ul2": {"vocab_size": VOCAB, "mode_ids": MODE_IDS},
    "bart": {"vocab_size": 1000, "mask_id": MASK_ID, "end_ids": (1, 17), "terminator_ids": (53,),
             "space_ids": (39,)},
    "deshuffle": {},
    "hybrid": {"vocab_size": 1000, "mask_id": MASK_ID, "special_ids": SPECIALS},
    "nsp": {"vocab_size": 1000, "mask_id": MASK_ID, "cls_id": 8, "sep_id": 9,
            "special_ids": SPECIALS},
}


def test_registry_names_and_binding():
    assert O.OBJECTIVES == ("clm", "mlm", "span_corruption", "prefix_lm", "ul2", "bart",
                            "deshuffle", "hybrid", "nsp")
    tokens = np.arange(10, 80, dtype=np.int32)
    for name, kw in _KWARGS.items():
        fn = O.get_objective(name, **kw)
        out = fn(tokens, 5)
        assert tuple(sorted(out)) == tuple(sorted(O.OUTPUT_KEYS[name]))
        assert all(v.dtype == np.int32 and v.ndim == 1 for v in out.values())
    ref = O.span_corruption(tokens, seed=5, **_KWARGS["span_corruption"])
    got = O.get_objective("span_corruption", **_KWARGS["span_corruption"])(tokens, 5)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


def test_tf_map_matches_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 900, size=(4, 64)).astype(np.int32)
    seeds = np.array([0, 17, -3, 2**40], np.int64)
    ds = tf.data.Dataset.from_tensor_slices((tokens, seeds))
    for name, kw in _KWARGS.items():
        mapped = ds.map(O.tf_objective_fn(name, None, **kw))
        assert all(spec.shape.as_list() == [None] for spec in mapped.element_spec.values())
        fn = O.get_objective(name, **kw)
        n = 0
        for (x, seed), got in zip(zip(tokens, seeds), mapped.as_numpy_iterator()):
            want = fn(x, int(seed))
            assert set(got) == set(want)
            for k in want:
                assert got[k].dtype == np.int32
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name}/{k}")
            n += 1
        assert n == 4
    # A subset of keys is honoured; unknown keys fail eagerly.
    sub = ds.map(O.tf_objective_fn("clm", ["decoder_target_tokens"]))
    assert list(sub.element_spec) == ["decoder_target_tokens"]
    with pytest.raises(ValueError, match="output_keys"):
        O.tf_objective_fn("clm", ["encoder_input_tokens"])


_X = np.arange(10, 50, dtype=np.int32)


def _sc(**kw):
    return O.span_corruption(_X, seed=0, **{"vocab_size": VOCAB, **kw})


def _mlm(**kw):
    return O.mlm(_X, seed=0, **{"vocab_size": 100, "mask_id": 3, **kw})


def _ul2(**kw):
    return O.ul2(_X, seed=0, **{"vocab_size": VOCAB, "mode_ids": MODE_IDS, **kw})


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: _sc(noise_density=0.0), "noise_density"),
        (lambda: _sc(noise_density=1.0), "noise_density"),
        (lambda: _sc(noise_density=1.5), "noise_density"),
        (lambda: _sc(mean_noise_span_length=0), "mean_noise_span_length"),
        (lambda: _sc(mean_noise_span_length=-2.0), "mean_noise_span_length"),
        (lambda: _sc(vocab_size=90), "vocab_size"),
        (lambda: O.span_corruption_lengths(512, noise_density=1.2), "noise_density"),
        (lambda: O.span_corruption_lengths(512, mean_noise_span_length=0.0), "mean_noise_span_length"),
        (lambda: _mlm(mask_rate=0.0), "mask_rate"),
        (lambda: _mlm(mask_rate=1.0), "mask_rate"),
        (lambda: _mlm(mask_token_fraction=0.95), "random_token_fraction"),
        (lambda: _mlm(mask_id=300), "mask_id"),
        (lambda: _mlm(vocab_size=4, special_ids=(0, 1, 2)), "vocab_size"),
        (lambda: _mlm(whole_word_starts=np.ones(3, bool)), "whole_word_starts"),
        (lambda: O.clm(np.zeros((2, 3), np.int32)), "tokens"),
        (lambda: _ul2(vocab_size=104), "vocab_size"),
        (lambda: _ul2(mode_ids={"nlu": 4, "s2s": 5}), "mode_ids"),
        (lambda: _ul2(mode_ids={**MODE_IDS, "nlg": VOCAB - 1}), "mode_ids"),
        (lambda: _ul2(denoisers=()), "denoisers"),
        (lambda: O.Denoiser("span", 0.0, 0.15, "nlu"), "mean_span"),
        (lambda: O.Denoiser("span", 3.0, 1.0, "nlu"), "noise_density"),
        (lambda: O.Denoiser("prefix", None, 0.25, "s2s"), "noise_density"),
        (lambda: O.Denoiser("span", 3.0, 0.15, "xyz"), "mode"),
        (lambda: O.get_objective("span_corruption", vocab_size=VOCAB, noise_density=2.0), "noise_density"),
        (lambda: O.get_objective("mlm", vocab_size=VOCAB, mask_id=3, mask_rate=1.5), "mask_rate"),
        (lambda: O.get_objective("mlm", mask_id=3), "vocab_size"),
        (lambda: O.get_objective("ul2", vocab_size=50, mode_ids=MODE_IDS), "vocab_size"),
        (lambda: O.get_objective("bart", **{**_KWARGS["bart"], "mask_ratio": 1.0}), "mask_ratio"),
        (lambda: O.get_objective("bart", **{**_KWARGS["bart"], "poisson_lambda": 0.0}),
         "poisson_lambda"),
        (lambda: O.get_objective("bart", **{**_KWARGS["bart"], "random_ratio": -0.5}),
         "random_ratio"),
        (lambda: O.get_objective("hybrid", **{**_KWARGS["hybrid"], "causal_fraction": 2.0}),
         "causal_fraction"),
        (lambda: O.get_objective("hybrid", **{**_KWARGS["hybrid"], "mask_rate": 0.0}),
         "mask_rate"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_unknown_objective_names_valid_ones():
    with pytest.raises(ValueError) as e:
        O.get_objective("electra")
    msg = str(e.value)
    assert "electra" in msg
    assert all(name in msg for name in O.OBJECTIVES)


def test_the_table_is_consistent():
    from jaxlm import config as config_lib
    from jaxlm import conventions

    assert config_lib.NATURAL_FAMILY is O.NATURAL_FAMILY
    assert O.NATURAL_FAMILY == {"clm": "decoder", "mlm": "encoder",
                                "span_corruption": "encoder_decoder", "prefix_lm": "decoder",
                                "ul2": "encoder_decoder", "bart": "encoder_decoder",
                                "deshuffle": "encoder_decoder", "hybrid": "decoder",
                                "nsp": "encoder"}
    for name, forms in O.FAMILY_FORMS.items():
        assert O.families(name)[0] == O.NATURAL_FAMILY[name]
        for family, form in forms.items():
            assert family in conventions.FAMILIES
            assert O.FORMS[form].family == family and O.form_name(name, family) == form
    for form in O.FORMS.values():
        assert form.packing in O.PACKINGS
        streams = {k.split("_", 1)[0] for k in form.features}
        assert streams == ({"decoder"} if form.family == "decoder" else
                           {"encoder"} if form.family == "encoder" else {"encoder", "decoder"})
    assert set(O.OUTPUT_KEYS) == set(O.FORMS)
    assert O.model_defaults("nsp", "encoder") == {"num_token_types": 2, "classifier_classes": 2}
    assert O.model_defaults("clm", "decoder") == {} == O.model_defaults("nsp", "decoder")


def test_vocabulary_kwargs_per_form():
    from jaxlm.data.tokenizer import ByteVocabulary

    byte = ByteVocabulary()
    assert O.objective_vocab_kwargs("clm", byte) == {}
    assert O.objective_vocab_kwargs("prefix_lm", byte) == {"eos_id": 1}
    mlm = O.objective_vocab_kwargs("mlm", byte)
    assert (mlm["vocab_size"], mlm["mask_id"]) == (384, byte.mask_id)
    assert set(mlm["special_ids"]) == set(range(384)) - set(byte.regular_ids)
    assert O.objective_vocab_kwargs("mlm_encoder_decoder", byte) == mlm
    assert O.objective_vocab_kwargs("ul2", byte) == {"vocab_size": 384,
                                                     "mode_ids": byte.mode_ids, "eos_id": 1}
    bart = O.objective_vocab_kwargs("bart", byte)
    assert {k: bart[k] for k in ("terminator_ids", "eos_id", "mask_id")} == {
        "terminator_ids": (7 + ord("!"), 7 + ord("."), 7 + ord("?")), "eos_id": 1, "mask_id": 3}
    assert 7 + ord("\n") in bart["end_ids"] and 1 in bart["end_ids"]
    assert {7 + ord(" "), 7 + ord("\n")} <= set(bart["space_ids"])
    assert O.objective_vocab_kwargs("hybrid", byte) == mlm
    assert O.objective_vocab_kwargs("deshuffle", byte) == {"eos_id": 1}
    for name in O.FORMS:  # every form binds with only its vocabulary kwargs
        O.get_objective(name, **O.objective_vocab_kwargs(name, byte))


@pytest.mark.parametrize("name", [n for n, f in O.FORMS.items() if f.batch_fn is not None])
def test_batch_forms_equal_the_row_function(name):
    """A batch form's row i is the row function on tokens[i] with seeds[i], for every length
    (the degenerate 0-2 too) and whatever the other rows of the batch are."""
    assert O.get_batch_objective("mlm", **_KWARGS["mlm"]) is None  # a row-only form
    rng = np.random.default_rng(0)
    fn = O.get_objective(name, **_KWARGS[name])
    batch_fn = O.get_batch_objective(name, **_KWARGS[name])
    for n in (0, 1, 2, 3, 7, 70, 141, 568):
        tokens = rng.integers(10, 900, size=(6, n)).astype(np.int32)
        seeds = rng.integers(-(2**63), 2**63 - 1, size=6, dtype=np.int64)
        out = batch_fn(tokens, seeds)
        assert tuple(sorted(out)) == tuple(sorted(O.OUTPUT_KEYS[name]))
        again = batch_fn(tokens[::-1], seeds[::-1])  # row order / neighbours do not matter
        for i in range(6):
            for k, v in fn(tokens[i], int(seeds[i])).items():
                np.testing.assert_array_equal(out[k][i], v)
                np.testing.assert_array_equal(again[k][5 - i], v)
        assert all(v.dtype == np.int32 and v.shape[0] == 6 for v in out.values())


def test_span_corruption_batch_other_rates_and_bad_input():
    tokens = np.arange(10, 10 + 4 * 200, dtype=np.int32).reshape(4, 200)
    seeds = np.array([0, 1, 2, 3])
    for density, mean in ((0.5, 8.0), (0.15, 64.0), (0.3, 1.0)):
        kw = dict(vocab_size=VOCAB, noise_density=density, mean_noise_span_length=mean)
        out = O.span_corruption_batch(tokens, seeds, **kw)
        for i in range(4):
            want = O.span_corruption(tokens[i], seed=int(seeds[i]), **kw)
            for k in want:
                np.testing.assert_array_equal(out[k][i], want[k])
    with pytest.raises(ValueError, match="2 seeds for 4 rows"):
        O.span_corruption_batch(tokens, seeds[:2], vocab_size=VOCAB)
    with pytest.raises(ValueError, match="2-D"):
        O.span_corruption_batch(tokens[0], seeds[:1], vocab_size=VOCAB)
