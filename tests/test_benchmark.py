"""The train benchmark's plumbing (never its speed): shapes, variants and the JSON report."""

import argparse
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))

import bench_train  # noqa: E402
import benchmark  # noqa: E402

# Batch 8: the tests run on 8 fake CPU devices and the batch is split over all of them.
TINY = ["--preset", "gpt2", "--num_layers", "2", "--d_model", "32", "--num_heads", "2",
        "--vocab_size", "128", "--seq_len", "16", "--batch_size", "8", "--steps", "1",
        "--rounds", "1", "--json"]


def test_variants_parse_into_model_config_changes():
    assert bench_train.parse_variant("noscan:scan_layers=false,num_heads=4,remat_policy=full") == (
        "noscan", {"scan_layers": False, "num_heads": 4, "remat_policy": "full"})
    assert bench_train.parse_variant("same") == ("same", {})


def test_shape_flags_override_the_preset_and_d_ff_follows_d_model():
    args = argparse.Namespace(
        preset="gpt2", family=None, d_model=32, num_heads=2, num_layers=2, d_ff=None,
        vocab_size=128, seq_len=2048, dtype="float32", remat="none", scan=True, attention="auto")
    cfg = bench_train.model_config(args)
    assert (cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.vocab_size) == (32, 128, 2, 128)
    assert cfg.max_len == 2048 and cfg.position == "learned" and cfg.dropout_rate == 0.0


def test_train_mode_reports_every_contender(capsys):
    pytest.importorskip("transformers")
    benchmark.main(["train"] + TINY + ["--compare-hf", "--from-hf"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["results"]) == {"jaxlm", "jaxlm-from-hf", "hf"}
    for row in result["results"].values():
        assert row["tokens_per_second"] > 0 and 0 < row["mfu"]
        assert row["step_memory_bytes"] > 0 and row["compile_seconds"] > 0
    assert result["flops_per_step"] > 0 and result["peak_flops_per_device"] > 0
