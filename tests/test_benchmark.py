"""The benchmarks' arithmetic, command lines and modes (never their speed: no wall-clock checks).

Each mode runs end to end on a tiny shape for one or two steps and must produce the columns it
promises; the FLOP / MFU / ratio arithmetic is checked against hand-computed cases.
"""

import json
import os
import re
import shlex
import sys

import numpy as np
import pytest

from jaxlm import cli as jaxlm_cli
from jaxlm.bench import attention, commands, loop, pipeline, report, step
from jaxlm.models import get_preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Batch 8: the tests run on 8 fake CPU devices and the batch is split over all of them.
SHAPE = ["--preset", "gpt2", "--num_layers", "2", "--d_model", "32", "--num_heads", "2",
         "--vocab_size", "128", "--seq_len", "16", "--batch_size", "8"]
TINY = SHAPE + ["--steps", "1", "--rounds", "2", "--json"]
ROW_COLUMNS = {"step_seconds", "tokens_per_second", "mfu", "compile_seconds",
               "step_memory_bytes", "page_faults_per_step", "rounds"}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    from jaxlm.data.corpus import prepare_default_corpus

    path = str(tmp_path_factory.mktemp("tfds"))
    prepare_default_corpus(path)
    return path


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# --- arithmetic ---------------------------------------------------------------------------------

def fake_contender(name, times, faults=(0.0,), compile_seconds=1.0, memory=None):
    return step.Contender(name, None, None, None, compile_seconds, memory, list(times),
                          list(faults))


def test_report_counts_flops_tokens_and_mfu_by_hand():
    # GPT-2 layout, L1 D4 H2 (head 2) F8 V10, T3, batch 2. Per layer forward: q, k, v, out
    # 4 x 4x4 = 64 params and the MLP 2 x 4x8 = 64, at 2 FLOPs per param and token over 3 tokens
    # = 768; attention QK^T and PV: 2 x 2 x 3 x 3 x 2 heads x 2 = 144; the head 2 x 4 x 10 x 3
    # = 240. Forward 1152, training 3x = 3456 per example, 6912 per step of 2 x 3 = 6 tokens.
    cfg = get_preset("gpt2").replace(num_layers=1, d_model=4, num_heads=2, d_ff=8, vocab_size=10)
    a = fake_contender("jaxlm", [0.5, 0.1, 0.2], faults=[100.0, 30.0, 50.0], memory=2**20)
    cpu = report.step_report(cfg, [a], 2, 3, 3, peak=1e5, platform="cpu", device_kind="cpu",
                             devices=8)
    assert cpu["flops_per_step"] == 6912 and cpu["tokens_per_step"] == 6
    row = cpu["results"]["jaxlm"]
    assert row["step_seconds"] == 0.2 and row["tokens_per_second"] == pytest.approx(30.0)
    # 6912 FLOPs / 0.2 s / 1e5: the 8 fake CPU devices share the one measured host peak.
    assert row["mfu"] == pytest.approx(0.3456)
    assert row["page_faults_per_step"] == 40.0  # the median of the rounds after the warm-up
    assert row["rounds"] == [0.5, 0.1, 0.2] and set(row) == ROW_COLUMNS
    gpu = report.step_report(cfg, [a], 2, 3, 3, peak=1e5, platform="gpu", device_kind="H200",
                             devices=2)
    assert gpu["results"]["jaxlm"]["mfu"] == pytest.approx(0.3456 / 2)


def test_report_counts_only_the_target_stream_of_an_encoder_decoder():
    cfg = get_preset("t5_base").replace(num_layers=1, d_model=8, num_heads=2, d_ff=16,
                                        vocab_size=32, head_dim=4)
    result = report.step_report(cfg, [fake_contender("jaxlm", [1.0])], 4, 10, 3, peak=1.0,
                                platform="cpu", device_kind="cpu", devices=1)
    assert result["tokens_per_step"] == 4 * 3


def test_the_table_gives_each_contender_its_ratios_to_hf():
    cfg = get_preset("gpt2").replace(num_layers=1, d_model=4, num_heads=2, d_ff=8, vocab_size=10)
    contenders = [fake_contender("jaxlm", [0.2], compile_seconds=4.0, memory=100 * 2**20),
                  fake_contender("hf", [0.25], compile_seconds=2.0, memory=200 * 2**20)]
    result = report.step_report(cfg, contenders, 2, 3, 3, peak=1e5, platform="cpu",
                                device_kind="cpu", devices=1)
    lines = report.format_table(result).splitlines()
    assert lines[0].split() == ["tokens/s", "step", "s", "MFU", "compile", "s", "step", "mem",
                                "faults/step"]
    assert lines[1].split()[:3] == ["jaxlm", "30", "0.200"] and "100M" in lines[1]
    assert "jaxlm / hf: tokens/s 1.25x, memory 0.50x, compile 2.00x" in lines
    assert not any(line.startswith("hf / hf") for line in lines)


def test_attention_flops_count_the_full_square_forward_and_backward():
    # QK^T and PV: 2 matmuls x 2 FLOPs x B2 x T4 x T4 x H3 x D5 = 1920 forward; x3 with backward.
    assert attention.attention_flops(2, 4, 3, 5) == 5760


def test_pipeline_counts_real_positions_from_segments_else_nonzero_tokens():
    packed = {"decoder_target_tokens": np.array([[5, 6, 7, 0]]),
              "decoder_segment_ids": np.array([[1, 1, 2, 0]])}
    assert pipeline.count_tokens(packed) == (3, 4)
    two_streams = {"encoder_input_tokens": np.array([[4, 0, 0], [4, 5, 0]]),
                   "decoder_target_tokens": np.array([[0, 9], [9, 9]])}  # id 0 there is padding
    assert pipeline.count_tokens(two_streams) == (3 + 3, 6 + 4)


# --- command lines ------------------------------------------------------------------------------

def quoted_commands(path):
    """Every `python experiments/benchmark.py ...` command quoted in a file, continuations
    joined, as argv lists."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read().replace("\\\n", " ")
    return [shlex.split(m, comments=True) for m in
            re.findall(r"python experiments/benchmark\.py ([^\n]*)", text)]


@pytest.mark.parametrize("path", ["README.md", "docs/performance.md", "experiments/benchmark.py"])
def test_the_commands_the_docs_quote_parse(path):
    quoted = quoted_commands(path)
    assert quoted
    parser = commands.build_parser()
    for argv in quoted:
        args = parser.parse_args(argv)
        assert args.mode in commands.MODES


def test_every_mode_parses_its_flags():
    parse = commands.build_parser().parse_args
    train = parse(["train", "--no-scan", "--compare-hf", "--from-hf", "--variant", "a:x=1",
                   "--variant", "b", "--remat", "full"])
    assert (train.scan, train.compare_hf, train.from_hf, train.variant, train.remat) == (
        False, True, True, ["a:x=1", "b"], "full")
    assert (train.steps, train.rounds, train.seq_len, train.batch_size) == (3, 3, 256, 8)
    compile_ = parse(["compile", "--layers", "2", "24", "--repeats", "1"])
    assert compile_.layers == [2, 24] and compile_.repeats == 1 and compile_.scan
    pipe = parse(["pipeline", "--objective", "ul2", "--packing", "greedy", "--json"])
    assert (pipe.objective, pipe.packing, pipe.json, pipe.batches) == ("ul2", "greedy", True, 100)
    att = parse(["attention"])
    assert (att.batch_size, att.seq_len, att.num_heads, att.head_dim, att.dtype) == (
        32, 1024, 12, 64, "bfloat16")
    lp = parse(["loop", "--set", "train.batch_size=8", "--set", "data.seq_len=64"])
    assert lp.set == ["train.batch_size=8", "data.seq_len=64"] and lp.steps == 100
    assert lp.config.endswith("experiments/configs/clm.py:tiny")
    assert os.path.exists(lp.config.rpartition(":")[0])
    for bad in (["pipeline"], ["train", "--layers", "2"], ["compile", "--plain"],
                ["attention", "--dtype", "int8"], ["loop", "--compare-hf"]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_variants_parse_into_model_config_changes():
    assert step.parse_variant("noscan:scan_layers=false,num_heads=4,remat_policy=full") == (
        "noscan", {"scan_layers": False, "num_heads": 4, "remat_policy": "full"})
    assert step.parse_variant("same") == ("same", {})


def test_shape_flags_override_the_preset_and_d_ff_follows_d_model():
    args = commands.build_parser().parse_args(["train"] + SHAPE[:-4] + ["--seq_len", "2048",
                                                                   "--remat", "none"])
    cfg = step.model_config(args)
    assert (cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.vocab_size) == (32, 128, 2, 128)
    assert cfg.max_len == 2048 and cfg.position == "learned" and cfg.dropout_rate == 0.0
    assert cfg.remat_policy == "none"


@pytest.mark.parametrize("flag", ["--compare-hf", "--from-hf"])
def test_hf_contenders_without_transformers_fail_in_one_line(capsys, monkeypatch, flag):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(SystemExit) as exit_:
        commands.main(["train"] + TINY + [flag])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{flag} needs transformers" in err and "pip install 'transformers>=4.45,<5'" in err


def test_loop_overrides_and_window():
    config = jaxlm_cli.load_config_file(os.path.join(ROOT, "experiments/configs/clm.py") + ":tiny")
    jaxlm_cli.apply_overrides(config, ["train.batch_size=8", "data.vocab=byte", "train.log_every=4"])
    assert config.train.batch_size == 8 and config.data.vocab == "byte"
    assert loop.set_window(config, steps=6, warmup=5) == 8  # rounded up to a log step
    assert (config.train.steps, config.train.eval_every, config.checkpoint.every_steps) == (
        14, 0, 14)
    assert config.optim.warmup_steps == 14  # the tiny config's 50, cut to the run
    with pytest.raises(ValueError, match="section.field=value"):
        jaxlm_cli.apply_overrides(config, ["train.batch_size"])


# --- every mode end to end ----------------------------------------------------------------------

def test_train_mode_reports_every_contender(capsys):
    result = commands.main(["train"] + TINY + ["--plain", "--variant", "logits:fused_loss=false"])
    assert last_json(capsys) == json.loads(json.dumps(result))
    assert list(result["results"]) == ["jaxlm", "logits", "jaxlm-plain"]
    for row in result["results"].values():
        assert set(row) == ROW_COLUMNS and len(row["rounds"]) == 2
        assert row["tokens_per_second"] == pytest.approx(8 * 16 / row["step_seconds"])
    assert result["tokens_per_step"] == 8 * 16 and result["mode"] == "train"
    assert result["model"] == {"attention_impl": "auto", "d_ff": 128}
    table = report.format_table(result)
    assert all(name in table for name in result["results"])


def test_train_mode_compares_with_transformers(capsys):
    pytest.importorskip("transformers")
    result = commands.main(["train"] + TINY + ["--compare-hf"])
    assert set(result["results"]) == {"jaxlm", "hf"}
    assert "jaxlm / hf: tokens/s" in report.format_table(result)


def test_compile_mode_reports_each_depth(capsys):
    result = commands.main(["compile"] + SHAPE + ["--layers", "1", "2", "--repeats", "1", "--json"])
    assert last_json(capsys)["compile_seconds"].keys() == {"1", "2"}
    assert all(set(row) == {"jaxlm"} for row in result["compile_seconds"].values())
    commands.main(["compile"] + SHAPE + ["--layers", "1", "2", "--repeats", "1"])
    assert re.match(r"jaxlm +compile L1: [\d.]+s, L2: [\d.]+s; L2 / L1 = [\d.]+x$",
                    capsys.readouterr().out.strip())


def test_attention_mode_runs_the_kernels_this_platform_has(capsys):
    result = commands.main(["attention", "--batch_size", "2", "--seq_len", "8", "--num_heads", "2",
                       "--head_dim", "4", "--dtype", "float32", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cuDNN kernels skipped: not a GPU"
    assert set(result["results"]) == {"jaxlm auto", "jaxlm auto padded", "xla"}
    assert all(set(r) == {"ms", "tflops"} for r in result["results"].values())
    assert result["max_abs_diff"]["causal"] < 1e-5 and result["max_abs_diff"]["padded"] < 1e-5
    assert [line.split()[0] for line in lines[3:]] == ["jaxlm", "jaxlm", "xla"]


def test_pipeline_mode_reports_tokens_and_padding(capsys, corpus_dir):
    result = commands.main(["pipeline", "--objective", "span_corruption", "--seq_len", "64",
                       "--batch_size", "4", "--batches", "2", "--warmup", "1",
                       "--data_dir", corpus_dir, "--json"])
    assert last_json(capsys) == json.loads(json.dumps(result))
    assert (result["family"], result["batches"], result["packing"]) == (
        "encoder_decoder", 2, "concat")
    assert 0 < result["padding_efficiency"] <= 1
    assert result["tokens_per_second"] == pytest.approx(
        result["batches_per_second"] * 4 * sum(result["lengths"].values())
        * result["padding_efficiency"])


def test_loop_mode_times_the_trainer_and_the_bare_step(capsys, corpus_dir):
    result = commands.main(["loop", "--set", f"data.data_dir={corpus_dir}", "--set",
                       "train.batch_size=8", "--set", "data.seq_len=32", "--set",
                       "data.shuffle_buffer=64", "--set", "data.window=32", "--set",
                       "train.log_every=1", "--steps", "2", "--warmup", "1", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "host overhead" in out and out.splitlines()[-4].split()[:2] == ["tokens/s", "ms/step"]
    assert (result["objective"], result["preset"], result["tokens_per_step"]) == (
        "clm", "tiny", 8 * 32)
    assert (result["steps"], result["warmup_steps"], result["rounds"]) == (2, 1, 1)
    trainer_ms, bare_ms = result["trainer"]["step_ms"], result["bare"]["step_ms"]
    assert result["trainer"]["tokens_per_second"] == pytest.approx(256 / trainer_ms * 1e3)
    assert result["host_overhead_ms_per_step"] == pytest.approx(trainer_ms - bare_ms)
    assert result["device_wait_fraction"] == pytest.approx(1 - bare_ms / trainer_ms)
    assert result["host_cpu_ms_per_step"] == pytest.approx(
        result["trainer"]["cpu_ms_per_step"] - result["bare"]["cpu_ms_per_step"])
    assert result["trainer_logged_tokens_per_second"] > 0
