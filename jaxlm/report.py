"""The objective comparison's report: results.csv, results.md and curves.png in the workdir.

    rows = write_report(results, workdir, config)   # results: compare.run_arm / run_baseline dicts

Every accuracy comes with its 95% bootstrap interval (`jaxlm.evaluation.stats`), computed from the
correctness matrices each run keeps in RUN_DIR/evaluation.npz (seeds stacked as extra subsets).
Gains are paired bootstraps against the no-pretraining row of the same architecture, and every
pair of objectives is compared the same way on the same examples; a difference is significant
when its interval excludes 0 (two-sided p < 0.05), marked `*` in results.md.
"""

from __future__ import annotations

import csv
import io as io_lib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlm import io
from jaxlm import metrics as metrics_lib
from jaxlm.evaluation import stats

# The T5 paper (Raffel et al. 2020), Table 4: GLUE average of objectives on one encoder-decoder.
T5_TABLE4_GLUE = {"BERT-style (MLM)": 82.96, "Prefix LM": 80.69, "Deshuffling": 73.17}
METRICS = ("probe", "finetune", "zero_shot")
METRIC_NAMES = {"probe": "probe", "finetune": "fine-tuned", "zero_shot": "zero-shot pairs"}
CSV_FIELDS = ("objective", "architecture", "layers", "d_ff", "params", "seeds",
              "pretraining_tokens", "pretraining_flops", "pretraining_mfu",
              "pretraining_tokens_per_second", "pretraining_peak_flops", "compile_seconds",
              "final_pretraining_loss", "final_eval_loss", "probe_k",
              *(f"{m}_{x}" for m in METRICS
                for x in ("accuracy", "ci_low", "ci_high", "gain", "gain_ci_low", "gain_ci_high",
                          "gain_p")),
              "probe_k64_accuracy", "probe_k64_ci_low", "probe_k64_ci_high", "wall_seconds")


def _group(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["objective"], r["family"]), []).append(r)
    return groups


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def load_scores(runs: Sequence[dict[str, Any]], probe_k: int) -> dict[str, np.ndarray]:
    """{'probe', 'probe_k64', 'finetune', 'zero_shot'}: 2-D correctness matrices, the seeds'
    rows stacked (seed-major, so two arms' matrices stay paired row by row)."""
    out: dict[str, list[np.ndarray]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        with np.load(io_lib.BytesIO(io.read_bytes(io.join(r["run_dir"], "evaluation.npz")))) as f:
            found = {"probe": f[f"probe_{probe_k}"], "finetune": f["finetune"],
                     "zero_shot": f["zero_shot"][None]}
            if "probe_64" in f and probe_k != 64:
                found["probe_k64"] = f["probe_64"]
        for key, value in found.items():
            out.setdefault(key, []).append(np.atleast_2d(value))
    return {k: np.concatenate(v) for k, v in out.items()}


def summarize(results: Sequence[dict[str, Any]], probe_k: int,
              resamples: int) -> tuple[list[dict], list[dict]]:
    """(rows of results.csv, pairwise differences between objectives); every interval from
    `resamples` bootstrap resamples (`evaluation.bootstrap_resamples`)."""
    groups = _group(results)
    scores = {key: load_scores(runs, probe_k) for key, runs in groups.items()}
    rows = []
    for (objective, family), runs in groups.items():
        mine = scores[(objective, family)]
        base = scores.get(("none", family))
        row = {"objective": objective, "architecture": family, "layers": runs[0]["layers"],
               "d_ff": runs[0]["d_ff"], "params": runs[0]["params"], "seeds": len(runs),
               "pretraining_tokens": runs[0]["text_tokens"],
               "pretraining_flops": runs[0]["flops"],
               "pretraining_mfu": _mean([r["pretraining_mfu"] for r in runs]),
               "pretraining_tokens_per_second": _mean(
                   [r["pretraining_tokens_per_second"] for r in runs]),
               "pretraining_peak_flops": _mean(
                   [r.get("pretraining_peak_flops") for r in runs]),
               "compile_seconds": _mean([r["compile_seconds"] for r in runs]),
               "final_pretraining_loss": _mean([r["train_loss"] for r in runs]),
               "final_eval_loss": _mean([r["eval_loss"] for r in runs]), "probe_k": probe_k,
               "wall_seconds": float(np.mean([r["wall_seconds"] for r in runs]))}
        for metric in METRICS:
            ci = stats.bootstrap_ci(mine[metric], num_resamples=resamples)
            row.update({f"{metric}_accuracy": ci.mean, f"{metric}_ci_low": ci.low,
                        f"{metric}_ci_high": ci.high})
            gain = (stats.paired_bootstrap(mine[metric], base[metric],
                                           num_resamples=resamples)
                    if base is not None and objective != "none" else None)
            row.update({f"{metric}_gain": gain and gain.difference,
                        f"{metric}_gain_ci_low": gain and gain.low,
                        f"{metric}_gain_ci_high": gain and gain.high,
                        f"{metric}_gain_p": gain and gain.p_value})
        if "probe_k64" in mine:
            ci = stats.bootstrap_ci(mine["probe_k64"], num_resamples=resamples)
            row.update(probe_k64_accuracy=ci.mean, probe_k64_ci_low=ci.low,
                       probe_k64_ci_high=ci.high)
        rows.append(row)
    pretrained = [k for k in groups if k[0] != "none"]
    pairs = []
    for a, b in itertools.combinations(pretrained, 2):
        for metric in METRICS:
            d = stats.paired_bootstrap(scores[a][metric], scores[b][metric],
                                       num_resamples=resamples)
            pairs.append({"a": a, "b": b, "metric": metric, "difference": d.difference,
                          "low": d.low, "high": d.high, "p": d.p_value,
                          "significant": d.significant})
    return rows, pairs


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _interval(row: dict[str, Any], metric: str) -> str:
    return (f"{row[f'{metric}_accuracy']:.3f} [{row[f'{metric}_ci_low']:.3f}, "
            f"{row[f'{metric}_ci_high']:.3f}]")


def _gain(row: dict[str, Any], metric: str) -> str:
    if row[f"{metric}_gain"] is None:
        return "—"
    low, high = row[f"{metric}_gain_ci_low"], row[f"{metric}_gain_ci_high"]
    mark = "*" if low > 0 or high < 0 else ""
    return f"{row[f'{metric}_gain']:+.3f}{mark} [{low:+.3f}, {high:+.3f}]"


def _arm(key: tuple[str, str]) -> str:
    return f"{key[0]} ({key[1]})"


def significance_sentences(rows: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]],
                           metric: str) -> list[str]:
    """The significant gains over the baselines and differences between objectives, in words."""
    name = METRIC_NAMES[metric]
    gains = [r for r in rows if r[f"{metric}_gain"] is not None]
    better = [r for r in gains if r[f"{metric}_gain_ci_low"] > 0]
    worse = [r for r in gains if r[f"{metric}_gain_ci_high"] < 0]
    lines = [f"- {name}: {len(better)} of {len(gains)} objectives significantly beat their "
             f"architecture's random init"
             + (f" ({', '.join(_arm((r['objective'], r['architecture'])) for r in better)})"
                if better else "")
             + (f"; significantly worse: "
                f"{', '.join(_arm((r['objective'], r['architecture'])) for r in worse)}"
                if worse else "") + "."]
    significant = [p for p in pairs if p["metric"] == metric and p["significant"]]
    for p in significant:
        winner, loser = (p["a"], p["b"]) if p["difference"] > 0 else (p["b"], p["a"])
        lines.append(f"  - {_arm(winner)} beats {_arm(loser)} by "
                     f"{abs(p['difference']):.3f} [{min(abs(p['low']), abs(p['high'])):.3f}, "
                     f"{max(abs(p['low']), abs(p['high'])):.3f}] (p = {p['p']:.3f}).")
    total = sum(p["metric"] == metric for p in pairs)
    if total:
        rest = "; the others are within the noise" if len(significant) < total else ""
        lines.append(f"  - {len(significant)} of {total} pairs of objectives differ "
                     f"significantly{rest}.")
    return lines


def answer(rows: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]],
           metric: str = "probe") -> str:
    """Which objective gives the better model on `metric`, and how sure that is."""
    pretrained = sorted((r for r in rows if r["objective"] != "none"),
                        key=lambda r: -r[f"{metric}_accuracy"])
    if not pretrained:
        return "No pretrained arm."
    best = pretrained[0]
    key = (best["objective"], best["architecture"])
    beaten = [p["b"] if p["a"] == key else p["a"] for p in pairs
              if p["metric"] == metric and p["significant"] and key in (p["a"], p["b"])
              and (p["difference"] > 0) == (p["a"] == key)]
    others = len(pretrained) - 1
    return (f"**Answer ({METRIC_NAMES[metric]}):** {_arm(key)} is highest "
            f"({best[f'{metric}_accuracy']:.3f}); it is significantly better than "
            f"{len(beaten)} of the {others} other objectives"
            + (f" ({', '.join(_arm(b) for b in beaten)})" if beaten else "")
            + (", and significantly better than its random init." if (best[f"{metric}_gain"]
               is not None and best[f"{metric}_gain_ci_low"] > 0)
               else ", but not significantly better than its random init."))


def markdown(rows: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]],
             c: Any, wall_seconds: float | None = None) -> str:
    """The results tables, the significant differences in words, and how to read them."""
    e = c.evaluation
    budget = ("the same model FLOPs" if c.pretrain.budget == "flops" else "the same text tokens")
    ordered = sorted(rows, key=lambda r: -r["probe_accuracy"])
    lines = ["# Pretraining objectives compared", "",
             f"Every arm pretrained with {budget} (pretrain.budget={c.pretrain.budget!r}) on the "
             "same corpus, with no held-out evaluation document; `none` rows are the same "
             "architectures from a random initialisation. Accuracies are fractions with 95% "
             "bootstrap intervals; gains are paired bootstraps against the `none` row of the "
             "same architecture on the same examples, `*` = significant (interval excludes 0). "
             f"Probe: frozen mean-pooled features, k = {rows[0]['probe_k']} per class, "
             f"{e.probe_subsets} subsets; fine-tuned: the whole model on k = {e.finetune_k} per "
             f"class, {e.finetune_subsets} subsets, {e.finetune_steps} steps; zero-shot: "
             f"{e.pairs} minimal pairs. MFU: model FLOP/s over the peak of the arm's devices "
             "(on CPU the best float32 matmul timed in the process up to the start of its "
             "pretraining; results.csv has it as pretraining_peak_flops). "
             f"Seeds: {rows[0]['seeds']}."
             + (f" Total wall time {wall_seconds:.0f}s." if wall_seconds else ""), "",
             "| objective | architecture | params | text tokens | FLOPs | MFU | tokens/s | "
             "probe | probe gain | fine-tuned | fine-tuned gain | zero-shot | zero-shot gain | "
             "wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ordered:
        lines.append(
            f"| {r['objective']} | {r['architecture']} | {r['params'] / 1e6:.2f}M | "
            f"{r['pretraining_tokens']:,} | {r['pretraining_flops']:.2e} | "
            f"{_fmt(r['pretraining_mfu'], 2)} | {_fmt(r['pretraining_tokens_per_second'], 0)} | "
            f"{_interval(r, 'probe')} | {_gain(r, 'probe')} | {_interval(r, 'finetune')} | "
            f"{_gain(r, 'finetune')} | {_interval(r, 'zero_shot')} | {_gain(r, 'zero_shot')} | "
            f"{r['wall_seconds']:.0f} |")
    if "probe_k64_accuracy" in rows[0]:
        lines += ["", "Probe at k = 64: " + "; ".join(
            f"{r['objective']} ({r['architecture']}) {r['probe_k64_accuracy']:.3f} "
            f"[{r['probe_k64_ci_low']:.3f}, {r['probe_k64_ci_high']:.3f}]" for r in ordered) + "."]
    lines += ["", "## Significant differences", "", answer(rows, pairs), ""]
    for metric in METRICS:
        lines += significance_sentences(rows, pairs, metric)
    lines += ["", "## Every pair of objectives (row minus column, paired bootstrap)", ""]
    for metric in METRICS:
        mine = [p for p in pairs if p["metric"] == metric]
        if not mine:
            continue
        lines += [f"{METRIC_NAMES[metric]}:", "", "| a | b | a − b | 95% interval | p |",
                  "|---|---|---|---|---|"]
        lines += [f"| {_arm(p['a'])} | {_arm(p['b'])} | {p['difference']:+.3f}"
                  f"{'*' if p['significant'] else ''} | [{p['low']:+.3f}, {p['high']:+.3f}] | "
                  f"{p['p']:.3f} |" for p in mine]
        lines.append("")
    lines += ["Pretraining losses (results.csv) are per objective and not comparable across "
              "objectives. Reference, the T5 paper's Table 4 (GLUE average, one "
              "encoder-decoder, 2^35 tokens): " + ", ".join(
                  f"{k} {v}" for k, v in T5_TABLE4_GLUE.items()) + ".", ""]
    return "\n".join(lines)


def _curves(results: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Pretraining loss against model FLOPs per arm (seed 0), from each run's metrics.jsonl."""
    curves = {}
    for r in results:
        train = metrics_lib.read_metrics(r["run_dir"], "train")
        if r["objective"] == "none" or r["seed"] != 0 or not train:
            continue
        per_step = r["flops"] / max(r["steps"], 1)
        points = [(x["step"] * per_step, x["loss"]) for x in train]
        curves[f"{r['objective']} ({r['family']})"] = ([p[0] for p in points],
                                                      [p[1] for p in points])
    return curves


def plot(results: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], path: str) -> None:
    """curves.png: pretraining loss vs FLOPs, and each accuracy with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(METRICS), figsize=(22, 5.5),
                             gridspec_kw={"width_ratios": [1.3] + [1] * len(METRICS)})
    ax = axes[0]
    curves = _curves(results)
    for label, (x, losses) in curves.items():
        ax.plot(x, losses, label=label)
    ax.set(xlabel="pretraining model FLOPs", ylabel="train loss (per objective)",
           title="Pretraining", yscale="log")
    if curves:
        ax.legend(fontsize=8)
    ordered = sorted(rows, key=lambda r: (r["architecture"], r["objective"] == "none",
                                          r["objective"]))
    labels = [f"{r['objective']} ({r['architecture']})" for r in ordered]
    y = np.arange(len(ordered))
    for i, (ax, metric) in enumerate(zip(axes[1:], METRICS, strict=True)):
        mean = np.array([r[f"{metric}_accuracy"] for r in ordered])
        err = np.array([[m - r[f"{metric}_ci_low"], r[f"{metric}_ci_high"] - m]
                        for m, r in zip(mean, ordered)]).T
        ax.barh(y, mean, xerr=err, capsize=3,
                color=["0.65" if r["objective"] == "none" else "C0" for r in ordered])
        ax.set_yticks(y, labels if i == 0 else [""] * len(y), fontsize=8)
        ax.invert_yaxis()
        low = max(0.0, float((mean - err[0]).min()) - 0.05)
        ax.set_xlim(low, min(1.0, float((mean + err[1]).max()) + 0.02))
        ax.set(xlabel="accuracy (95% bootstrap interval)", title=METRIC_NAMES[metric])
    fig.tight_layout()
    buffer = io_lib.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    io.write_bytes(path, buffer.getvalue())


def write_report(results: Sequence[dict[str, Any]], workdir: str, c: Any,
                 wall_seconds: float | None = None) -> list[dict[str, Any]]:
    """results.csv, results.md and curves.png in `workdir`; returns the CSV rows."""
    rows, pairs = summarize(results, int(c.evaluation.probe_k),
                            int(c.evaluation.bootstrap_resamples))
    table = io_lib.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(io.join(workdir, "results.csv"), table.getvalue())
    io.write_text(io.join(workdir, "results.md"), markdown(rows, pairs, c, wall_seconds))
    plot(results, rows, io.join(workdir, "curves.png"))
    return rows
