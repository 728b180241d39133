"""Decoding with the KV cache against the full forward pass; sampling; span and mask filling."""

import functools
import importlib.util
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlm import generate
from jaxlm.checkpoint import Checkpointer
from jaxlm.data.tokenizer import ByteVocabulary
from jaxlm.models import build_model, get_preset, init_params
from jaxlm.train import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("generate_cli",
                                               os.path.join(ROOT, "experiments", "generate.py"))
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)
PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44, 45], [200]]


def _model(family: str, **changes):
    # Untied embeddings and a larger init: a random tied model greedily repeats its last token,
    # which would make the equality tests weak.
    changes = {"scan_layers": False, "d_ff": 128, "tie_embeddings": False, "init_std": 0.2,
               **changes}
    cfg = get_preset("tiny", family).replace(**changes)
    model = build_model(cfg)
    return model, nn.meta.unbox(init_params(model, jax.random.key(0)))


@pytest.fixture(scope="module")
def decoder():
    return _model("decoder", position="rotary", num_kv_heads=2)


@pytest.fixture(scope="module")
def encoder_decoder():
    return _model("encoder_decoder", position="relative")


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, batch):
    return model.apply({"params": params}, batch)


def _full_logits(model, params, seq, encoder=None, length=16):
    """Logits after `seq` from the uncached forward pass. The sequence is padded on the right to a
    fixed length (one compile): causality keeps later positions out of position len(seq) - 1."""
    batch = {"decoder_input_tokens": jnp.array([seq + [0] * (length - len(seq))])}
    if encoder is not None:
        batch["encoder_input_tokens"] = jnp.array([encoder + [0] * (length - len(encoder))])
    return np.asarray(_forward(model, params, batch))[0, len(seq) - 1]


def _greedy_reference(model, params, prompt, steps, encoder=None):
    """Argmax of the full (uncached) forward pass, re-run on the whole sequence at every step."""
    seq = [0] + list(prompt)
    for _ in range(steps):
        seq.append(int(np.argmax(_full_logits(model, params, seq, encoder))))
    return seq[len(prompt) + 1:]


def test_greedy_with_cache_equals_the_full_forward_pass(decoder):
    model, params = decoder
    out = generate.sample(model, params, PROMPTS, max_new_tokens=6, eos_id=None)
    assert out.tokens.shape == (3, 6) and out.lengths.tolist() == [6, 6, 6]
    for prompt, row in zip(PROMPTS, out.tokens):
        assert row.tolist() == _greedy_reference(model, params, prompt, 6)
    assert len({tuple(r) for r in out.tokens}) == 3 and len(set(out.tokens[1])) > 1


def test_batch_of_different_lengths_equals_each_prompt_alone(decoder):
    model, params = decoder
    batch = generate.sample(model, params, PROMPTS, max_new_tokens=6, eos_id=None)
    # The longest prompt (teacher-forced past the shared prefill) and the shortest one.
    for i in (1, 2):
        alone = generate.sample(model, params, [PROMPTS[i]], max_new_tokens=6, eos_id=None)
        np.testing.assert_array_equal(alone.tokens[0], batch.tokens[i])


def test_top_k_one_equals_greedy(decoder):
    model, params = decoder
    greedy = generate.sample(model, params, PROMPTS, max_new_tokens=6, eos_id=None)
    top1 = generate.sample(model, params, PROMPTS, max_new_tokens=6, eos_id=None,
                           temperature=1.0, top_k=1, seed=7)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)


def _allowed(logits, top_k=None, top_p=None):
    order = np.argsort(-logits)
    if top_k is not None:
        order = order[:top_k]
    if top_p is not None:
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        before = np.cumsum(probs[order]) - probs[order]
        order = order[before < top_p]
    return set(order.tolist())


@pytest.mark.parametrize("top_k,top_p", [(None, 0.3), (4, None)])
def test_sampling_is_seeded_and_stays_in_the_allowed_set(decoder, top_k, top_p):
    model, params = decoder
    kw = dict(max_new_tokens=6, eos_id=None, temperature=0.8, top_k=top_k, top_p=top_p)
    first = generate.sample(model, params, PROMPTS[:2], seed=3, **kw)
    np.testing.assert_array_equal(first.tokens,
                                  generate.sample(model, params, PROMPTS[:2], seed=3, **kw).tokens)
    other = generate.sample(model, params, PROMPTS[:2], seed=4, **kw)
    assert not np.array_equal(first.tokens, other.tokens)
    for prompt, row in zip(PROMPTS[:2], first.tokens):
        seq = [0] + prompt
        for token in row.tolist():
            # The filter acts on logits / temperature, as `filter_logits` does.
            logits = _full_logits(model, params, seq) / 0.8
            assert token in _allowed(logits, top_k, top_p), (token, seq)
            seq.append(token)


def test_filter_logits_keeps_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda p: np.isfinite(generate.filter_logits(logits, generate.Sampling(1.0, None, p)))
    assert kept(0.5)[0].tolist() == [True, False, False, False]
    assert kept(0.6)[0].tolist() == [True, True, False, False]
    assert kept(0.95)[0].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="top_p"):
        generate.Sampling(1.0, None, 0.0)


def test_eos_stops_a_row(decoder):
    model, params = decoder
    free = generate.sample(model, params, PROMPTS, max_new_tokens=6, eos_id=None)
    eos = int(free.tokens[1, 2])  # make the third token of row 1 its end
    out = generate.sample(model, params, PROMPTS, max_new_tokens=6, eos_id=eos)
    first = int(np.flatnonzero(free.tokens[1] == eos)[0])
    assert out.lengths[1] == first + 1
    np.testing.assert_array_equal(out.tokens[1, :first + 1], free.tokens[1, :first + 1])
    assert (out.tokens[1, first + 1:] == 0).all()
    for row in (0, 2):  # the other rows run on, unless they meet the same token
        hits = np.flatnonzero(free.tokens[row] == eos)
        assert out.lengths[row] == (hits[0] + 1 if hits.size else 6)


def test_encoder_decoder_greedy_matches_the_full_forward_pass(encoder_decoder):
    model, params = encoder_decoder
    inputs = [[5, 6, 7, 1], [40, 41, 42, 43, 44, 45, 1]]
    out = generate.generate_encoder_decoder(model, params, inputs, max_new_tokens=5, eos_id=None)
    for encoder, row in zip(inputs, out.tokens):
        assert row.tolist() == _greedy_reference(model, params, [], 5, encoder)
    # The shorter input, padded in the batch, decodes as it does alone.
    alone = generate.generate_encoder_decoder(model, params, inputs[:1], max_new_tokens=5,
                                              eos_id=None)
    np.testing.assert_array_equal(alone.tokens[0], out.tokens[0])


def test_encode_text_and_parse_spans():
    vocab = ByteVocabulary()
    ids = generate.encode_text(vocab, "a<extra_id_0>b[MASK]<extra_id_1>")
    assert ids == vocab.encode("a") + [vocab.sentinel_id(0)] + vocab.encode("b") + [
        vocab.mask_id, vocab.sentinel_id(1)]
    out = [vocab.sentinel_id(0), *vocab.encode("cat"), vocab.sentinel_id(1), *vocab.encode("mat"),
           vocab.eos_id, *vocab.encode("junk")]
    assert generate.parse_spans(out, vocab) == {0: vocab.encode("cat"), 1: vocab.encode("mat")}


def test_fill_spans_parses_the_model_output(encoder_decoder):
    model, params = encoder_decoder
    vocab = ByteVocabulary()
    text = "The <extra_id_0> sat on the <extra_id_1>."
    fill = generate.fill_spans(model, params, text, vocab, max_new_tokens=12)
    out = generate.generate_encoder_decoder(
        model, params, [generate.encode_text(vocab, text) + [1]], max_new_tokens=12)
    tokens = out.tokens[0, :out.lengths[0]]
    spans = generate.parse_spans(tokens, vocab)
    assert fill.spans == {i: vocab.decode(s) for i, s in spans.items()}
    assert fill.output == vocab.decode(tokens)
    expected = text.replace("<extra_id_0>", fill.spans.get(0, "")).replace(
        "<extra_id_1>", fill.spans.get(1, ""))
    assert fill.text == expected and "<extra_id_" not in fill.text


def test_fill_masks_returns_the_argmax_at_each_mask():
    model, params = _model("encoder", position="learned")
    rows = [[10, 3, 12, 13, 3], [20, 21, 3]]
    fills = generate.fill_masks(model, params, rows, mask_id=3, top_k=3)
    for row, fill in zip(rows, fills):
        logits = _forward(model, params, {"encoder_input_tokens": jnp.array([row])})[0]
        assert fill.positions.tolist() == [i for i, t in enumerate(row) if t == 3]
        for pos, ids, probs in zip(fill.positions, fill.ids, fill.probs):
            assert ids.tolist() == np.argsort(-logits[pos])[:3].tolist()
            assert (np.diff(probs) <= 0).all() and 0 < probs.sum() <= 1 + 1e-6
        assert fill.filled[fill.positions].tolist() == fill.ids[:, 0].tolist()


def test_the_cli_continues_prompts_from_a_checkpoint(tmp_path, decoder, capsys):
    model, params = decoder
    state = TrainState(step=jnp.array(3), params=params, opt_state=optax.adamw(1e-3).init(params),
                       rng=jax.random.key_data(jax.random.key(1)))
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(3, state, {}, model.cfg)
    checkpointer.close()
    (tmp_path / "config.json").write_text(json.dumps(
        {"objective": "clm", "data": {"vocab": "byte", "vocab_size": None}}))

    assert cli.main(["--workdir", str(tmp_path), "--prompt", "def f(", "--prompt", "x",
                     "--max_new_tokens", "4"]) == 0
    out = capsys.readouterr().out
    vocab = ByteVocabulary()
    expected = generate.sample(model, params, [vocab.encode("def f("), vocab.encode("x")],
                               max_new_tokens=4)
    assert f"[0] def f(|{vocab.decode(expected.tokens[0])}\n" in out
    assert "step 3" in out and "objective clm: continue" in out and "[1] x|" in out


def test_the_cli_reports_errors_in_one_line(tmp_path, capsys):
    assert cli.main(["--workdir", str(tmp_path / "nope"), "--prompt", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and len(err.splitlines()) == 1
    (tmp_path / "config.json").write_text("{}")
    assert cli.main(["--workdir", str(tmp_path), "--prompt", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert "checkpoints" in err and len(err.splitlines()) == 1
