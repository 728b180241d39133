"""The objective comparison: the arms' matching, and a small end-to-end run with its report."""

import csv
import json
import os

import numpy as np
import pytest

from jaxlm import compare, compare_eval
from jaxlm.checkpoint import load_run
from jaxlm.config import ConfigError
from jaxlm.finetune import classifier_batch


@pytest.mark.parametrize("d_model,num_layers,d_ff", [(128, 4, 512), (64, 2, 256), (512, 6, 2048),
                                                      (768, 12, 3072), (256, 5, 1024)])
def test_the_arms_have_parameter_counts_within_ten_percent(d_model, num_layers, d_ff):
    c = compare.get_config()
    c.model.d_model, c.model.num_layers, c.model.d_ff = d_model, num_layers, d_ff
    c.model.num_heads = max(1, d_model // 64)
    arms = compare.plan(c)  # raises when the counts differ by more than 10%
    assert {a.family for a in arms} == {"decoder", "encoder", "encoder_decoder"}
    counts = [compare._param_count(a.model, a.family) for a in arms]
    assert max(counts) <= 1.1 * min(counts)


def test_same_architecture_puts_every_objective_on_the_encoder_decoder():
    c = compare.get_config()
    c.same_architecture = True
    with pytest.raises(ConfigError, match="clm have no encoder-decoder form"):
        compare.plan(c)
    c.objectives = "mlm,span_corruption,prefix_lm,ul2"
    assert {a.family for a in compare.plan(c)} == {"encoder_decoder"}


def test_unknown_objective_is_refused():
    c = compare.get_config()
    c.objectives = "clm,electra"
    with pytest.raises(ConfigError, match="objectives='clm,electra'"):
        compare.plan(c)


def small_config(data_dir):
    """Tiny arms, a small evaluation: the whole comparison in about a minute on 2 cores."""
    c = compare.get_config()
    c.objectives = "clm,span_corruption"
    c.model.update(d_model=32, num_heads=2, d_ff=64, num_layers=2)
    c.data.update(data_dir=data_dir, vocab_size=1024, seq_len=32, shuffle_buffer=64, window=32)
    c.pretrain.update(flops=4e9, batch_size=16, warmup_steps=2, log_every=4, eval_batches=1)
    c.evaluation.update(seq_len=32, pool_per_class=32, probe_ks="4,8", probe_k=4,
                        probe_subsets=2, finetune_k=4, finetune_subsets=1, finetune_steps=3,
                        finetune_batch_size=8, pairs=40, batch_size=64,
                        bootstrap_resamples=500)
    return c


def test_a_small_comparison_writes_its_report_and_resumes(tmp_path):
    """Two classic arms and the three newer objectives (bart, hybrid and nsp, with its classifier
    head) through the same pretraining budget, evaluation and report, in one run."""
    c = small_config(str(tmp_path / "data"))
    c.objectives = "clm,span_corruption,bart,hybrid,nsp"
    workdir = str(tmp_path / "compare")
    lines = []
    results = compare.compare(c, workdir, say=lines.append)
    assert [(r["objective"], r["family"]) for r in results] == [
        ("clm", "decoder"), ("span_corruption", "encoder_decoder"), ("bart", "encoder_decoder"),
        ("hybrid", "decoder"), ("nsp", "encoder"), ("none", "decoder"),
        ("none", "encoder_decoder"), ("none", "encoder")]
    clm, span = results[0], results[1]
    # The same FLOPs, not the same steps: within one step's FLOPs of the budget.
    for r in (clm, span):
        assert abs(r["flops"] - 4e9) <= r["flops"] / r["steps"] / 2
    assert clm["steps"] != span["steps"]
    for name in ("results.md", "results.csv", "curves.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "results.csv")) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    required = ("objective, architecture, params, pretraining_tokens, pretraining_flops, "
                "pretraining_mfu, pretraining_tokens_per_second, probe_accuracy, probe_ci_low, "
                "probe_ci_high, probe_gain, probe_gain_ci_low, probe_gain_ci_high, "
                "finetune_accuracy, finetune_ci_low, finetune_ci_high, zero_shot_accuracy, "
                "zero_shot_ci_low, zero_shot_ci_high, wall_seconds").split(", ")
    assert set(required) <= set(reader.fieldnames)
    assert [r["objective"] for r in rows] == [r["objective"] for r in results]
    for r in rows:
        for metric in ("probe", "finetune", "zero_shot"):
            low, mean, high = (float(r[f"{metric}_{x}"]) for x in ("ci_low", "accuracy",
                                                                   "ci_high"))
            assert 0 <= low <= mean <= high <= 1
        assert (r["probe_gain"] == "") == (r["objective"] == "none")
    for r in rows:
        pretrained = r["objective"] != "none"
        assert (float(r["pretraining_mfu"] or 0) > 0) == pretrained
        assert (float(r["pretraining_peak_flops"] or 0) > 1e8) == pretrained  # a CPU, timed
        assert (float(r["pretraining_flops"]) > 0) == pretrained
        assert (float(r["pretraining_tokens"]) > 0) == pretrained
    # No held-out document is pretraining text.
    with open(compare_eval.pretraining_corpus(str(tmp_path / "data" / "stdlib_heldout"))) as f:
        pretraining = {json.loads(line)["text"] for line in f}
    suite_texts = {d.text for d in compare_eval.split_documents(
        compare_eval.stdlib_documents())[1]}
    assert suite_texts and not pretraining & suite_texts
    assert any(line.startswith("[8/8]") for line in lines)
    # A rerun finds every arm done and only rewrites the report.
    again = []
    compare.compare(c, workdir, say=again.append)
    assert any("done before" in line for line in again)
    assert not any(line.startswith("step ") for line in again)
    # load_run on an arm folder: the model, its params, vocabulary and config.
    run = load_run(os.path.join(workdir, "seed_0", "clm-decoder"))
    assert run.config["objective"] == "clm" and run.vocab.vocab_size == 1024
    tokens = np.asarray([run.vocab.encode("Return the value.") + [1]], np.int32)
    hidden = run.model.apply({"params": run.params}, classifier_batch("decoder", tokens),
                             return_hidden=True)
    assert hidden.shape == (1, tokens.shape[1], 32) and np.all(np.isfinite(hidden))
    # A baseline folder has scores but no pretrained model: load_run says so.
    with pytest.raises(FileNotFoundError, match="no-pretraining baseline"):
        load_run(os.path.join(workdir, "seed_0", "none-decoder"))


def test_an_unknown_budget_is_refused(tmp_path):
    c = compare.get_config()
    c.pretrain.budget = "steps"
    with pytest.raises(ConfigError, match="pretrain.budget='steps'"):
        compare.steps_for(c, compare.plan(c)[0], 0)


def test_the_encoder_scores_only_where_a_pair_differs():
    from jaxlm.data.tokenizer import ByteVocabulary
    from jaxlm.data.tasks import encode_texts
    from jaxlm.evaluation.pairs import score_encoder
    from jaxlm.models import build_model
    from jaxlm.models.config import ModelConfig

    vocab = ByteVocabulary()
    a, _ = encode_texts(vocab, [("the cat sat",), ("a dog ran far",)], 16)
    b, _ = encode_texts(vocab, [("cat the sat",), ("a dog ate far",)], 16)
    mask_a, mask_b = compare_eval.differing_positions(a, b, vocab.sentinel_id(0))
    # "the cat" / "cat the": no common prefix, common suffix " sat" + EOS, so bytes 0-6;
    # "ran" / "ate": bytes 6-8.
    assert np.flatnonzero(mask_a[0]).tolist() == list(range(7))
    assert np.flatnonzero(mask_b[1]).tolist() == [6, 7, 8]
    assert (mask_a == mask_b).all()
    cfg = ModelConfig(family="encoder", vocab_size=vocab.vocab_size, d_model=32, num_heads=2,
                      d_ff=64, num_layers=1)
    model = build_model(cfg)
    params = compare_eval.random_params(cfg, 0)
    full = score_encoder(model, params, a, vocab.mask_id, 8)
    region = score_encoder(model, params, a, vocab.mask_id, 8, scored=mask_a)
    assert np.all(region > full) and np.all(region < 0)  # fewer (negative) terms in the sum
