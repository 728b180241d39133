"""The comparison's report: intervals, paired gains and the significance marking."""

import csv
import os

import numpy as np

from jaxlm import compare, report


def _run(tmp_path, objective, family, correct, seed=0):
    """A result dict as compare.run_arm writes it, with an evaluation.npz of `correct` scores."""
    run_dir = tmp_path / f"{objective}-{family}-{seed}"
    run_dir.mkdir()
    np.savez(run_dir / "evaluation.npz", probe_16=correct, probe_64=correct,
             finetune=correct[:3], zero_shot=correct[0])
    pretrained = objective != "none"
    return {"objective": objective, "family": family, "seed": seed, "params": 1000,
            "layers": "2", "d_ff": 64, "steps": 10 * pretrained,
            "text_tokens": 1000 * pretrained, "flops": 1e9 * pretrained,
            "pretraining_mfu": 0.4 if pretrained else None,
            "pretraining_tokens_per_second": 1e4 if pretrained else None,
            "compile_seconds": 1.0, "train_loss": None, "eval_loss": None,
            "run_dir": str(run_dir), "wall_seconds": 5.0}


def test_a_real_gain_is_marked_significant_and_a_null_one_is_not(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((10, 2000)) < 0.5).astype(float)
    better = np.where(rng.random(base.shape) < 0.3, 1.0, base)  # ~ +15 points, paired
    noise = np.where(rng.random(base.shape) < 0.01, 1 - base, base)  # ~ 0 on average
    results = [_run(tmp_path, "mlm", "encoder", better), _run(tmp_path, "clm", "encoder", noise),
               _run(tmp_path, "none", "encoder", base)]
    c = compare.get_config()
    rows = report.write_report(results, str(tmp_path), c)
    by = {r["objective"]: r for r in rows}
    assert by["mlm"]["probe_gain_ci_low"] > 0.1
    assert by["clm"]["probe_gain_ci_low"] < 0 < by["clm"]["probe_gain_ci_high"]
    assert by["none"]["probe_gain"] is None
    for r in rows:
        assert r["probe_ci_low"] <= r["probe_accuracy"] <= r["probe_ci_high"]
        assert r["probe_ci_high"] - r["probe_ci_low"] < 0.05
    md = open(os.path.join(tmp_path, "results.md")).read()
    assert "Seeds: 1." in md and "{" not in md  # every placeholder filled in
    mlm_line = next(line for line in md.splitlines() if line.startswith("| mlm |"))
    clm_line = next(line for line in md.splitlines() if line.startswith("| clm |"))
    assert f"{by['mlm']['probe_gain']:+.3f}*" in mlm_line
    assert f"{by['clm']['probe_gain']:+.3f}*" not in clm_line
    assert "probe: 1 of 2 objectives significantly beat their architecture's random init " \
           "(mlm (encoder))" in md
    assert "mlm (encoder) beats clm (encoder)" in md
    assert "  - 1 of 1 pairs of objectives differ significantly.\n" in md  # no "the others"
    assert "**Answer (probe):** mlm (encoder) is highest" in md
    with open(os.path.join(tmp_path, "results.csv")) as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["objective"] for r in csv_rows] == ["mlm", "clm", "none"]
    assert abs(float(csv_rows[0]["probe_gain"]) - by["mlm"]["probe_gain"]) < 1e-12
    assert os.path.getsize(os.path.join(tmp_path, "curves.png")) > 0


def test_seeds_stack_as_paired_rows(tmp_path):
    rng = np.random.default_rng(1)
    runs = [_run(tmp_path, "mlm", "encoder", (rng.random((4, 50)) < 0.5).astype(float), seed)
            for seed in (1, 0)]
    scores = report.load_scores(runs, 16)
    assert scores["probe"].shape == (8, 50) and scores["zero_shot"].shape == (2, 50)
    first = np.load(os.path.join(runs[1]["run_dir"], "evaluation.npz"))["probe_16"]
    np.testing.assert_array_equal(scores["probe"][:4], first)  # seed 0's rows first


def test_the_report_reads_and_writes_cloud_storage(gcs_bucket, tmp_path):
    """Run folders and the report on gs:// (the Cloud Storage emulator), through jaxlm.io."""
    import io as io_lib
    import uuid

    from jaxlm import io

    workdir = io.join(gcs_bucket, f"compare-{uuid.uuid4().hex}")
    rng = np.random.default_rng(2)
    results = []
    for objective in ("clm", "none"):
        local = _run(tmp_path, objective, "decoder", (rng.random((2, 300)) < 0.6).astype(float))
        run_dir = io.join(workdir, "seed_0", f"{objective}-decoder")
        io.write_bytes(io.join(run_dir, "evaluation.npz"),
                       (tmp_path / f"{objective}-decoder-0" / "evaluation.npz").read_bytes())
        io.write_text(io.join(run_dir, "metrics.jsonl"), '{"step": 5, "split": "train", '
                      '"loss": 3.0, "mfu": 0.3}\n')
        results.append({**local, "run_dir": run_dir})
    compare._write_json(io.join(workdir, "seed_0", "clm-decoder", "result.json"), {"a": 1})
    assert compare._read_json(io.join(workdir, "seed_0", "clm-decoder", "result.json")) == {"a": 1}
    assert compare._speed(io.join(workdir, "seed_0", "clm-decoder"))["pretraining_mfu"] == 0.3
    rows = report.write_report(results, workdir, compare.get_config())
    table = list(csv.DictReader(io_lib.StringIO(io.read_text(io.join(workdir, "results.csv")))))
    assert [r["objective"] for r in table] == [r["objective"] for r in rows] == ["clm", "none"]
    assert "| clm |" in io.read_text(io.join(workdir, "results.md"))
    assert io.read_bytes(io.join(workdir, "curves.png")).startswith(b"\x89PNG")
