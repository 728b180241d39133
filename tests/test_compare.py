"""The objective comparison: the arms' matching, and a small end-to-end run with its report."""

import csv
import os

import pytest

from jaxlm import compare
from jaxlm.config import ConfigError


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


def test_a_small_comparison_writes_its_report_and_resumes(tmp_path, corpus_dir):
    data_dir = corpus_dir
    c = compare.get_config()
    c.objectives = "clm,span_corruption"
    c.model.update(d_model=32, num_heads=2, d_ff=128, num_layers=2)
    c.data.update(data_dir=data_dir, seq_len=32, shuffle_buffer=64, window=32)
    c.pretrain.update(tokens=32 * 16 * 12, batch_size=16, warmup_steps=2, log_every=4,
                      eval_batches=1)
    c.finetune.update(steps=6, batch_size=16, eval_every=3, seq_len=32)
    workdir = str(tmp_path / "compare")
    lines = []
    results = compare.compare(c, workdir, say=lines.append)
    assert [(r["objective"], r["family"]) for r in results] == [
        ("clm", "decoder"), ("span_corruption", "encoder_decoder"), ("none", "decoder"),
        ("none", "encoder_decoder")]
    clm, span = results[0], results[1]
    assert clm["steps"] == 12 and abs(span["text_tokens"] - clm["text_tokens"]) < 32 * 16
    for name in ("results.md", "results.csv", "curves.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["objective"] for r in rows] == ["clm", "span_corruption", "none", "none"]
    assert all(0 <= float(r["downstream_accuracy_mean"]) <= 1 for r in rows)
    assert float(rows[0]["final_pretraining_loss"]) > 0 and rows[0]["pretraining_tokens"] != "0"
    assert any(line.startswith("[4/4]") for line in lines)
    # A rerun finds every arm done and only rewrites the report.
    again = []
    compare.compare(c, workdir, say=again.append)
    assert any("done before" in line for line in again)
    assert not any(line.startswith("step ") for line in again)
