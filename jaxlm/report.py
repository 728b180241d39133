"""The objective comparison's report: results.csv, results.md and curves.png in the workdir."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

# The T5 paper (Raffel et al. 2020), Table 4: GLUE average of objectives on one encoder-decoder.
T5_TABLE4_GLUE = {"BERT-style (MLM)": 82.96, "Prefix LM": 80.69, "Deshuffling": 73.17}
CSV_FIELDS = ("objective", "architecture", "layers", "d_ff", "params", "seeds",
              "pretraining_tokens", "pretraining_flops", "final_pretraining_loss",
              "final_eval_loss", "downstream_task", "downstream_accuracy_mean",
              "downstream_accuracy_std", "majority_accuracy", "wall_seconds")


def _group(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["objective"], r["family"]), []).append(r)
    return groups


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(results: Sequence[dict[str, Any]], task_names: Sequence[str]) -> list[dict]:
    """One row per (arm, task), seeds aggregated: the rows of results.csv."""
    rows = []
    for (objective, family), runs in _group(results).items():
        for task in task_names:
            accuracies = [r["downstream"][task]["final_accuracy"] for r in runs]
            rows.append({
                "objective": objective, "architecture": family, "layers": runs[0]["layers"],
                "d_ff": runs[0]["d_ff"], "params": runs[0]["params"], "seeds": len(runs),
                "pretraining_tokens": runs[0]["text_tokens"],
                "pretraining_flops": runs[0]["flops"],
                "final_pretraining_loss": _mean([r["train_loss"] for r in runs]),
                "final_eval_loss": _mean([r["eval_loss"] for r in runs]),
                "downstream_task": task,
                "downstream_accuracy_mean": float(np.mean(accuracies)),
                "downstream_accuracy_std": float(np.std(accuracies, ddof=1))
                if len(accuracies) > 1 else 0.0,
                "majority_accuracy": runs[0]["downstream"][task]["majority_accuracy"],
                "wall_seconds": float(np.mean([r["wall_seconds"] for r in runs])),
            })
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows: Sequence[dict[str, Any]], same_architecture: bool) -> str:
    """The results table with the baselines and how to read it."""
    lines = ["# Pretraining objectives compared", "",
             "Every arm pretrained on the same text (same corpus, order and number of text "
             "tokens) and fine-tuned identically; `none` rows are the same architectures "
             "fine-tuned from a random initialisation. Accuracy is the final eval accuracy of "
             "fine-tuning (mean ± std over seeds). Pretraining losses are per objective and not "
             "comparable across objectives (each predicts different targets).", ""]
    tasks = sorted({r["downstream_task"] for r in rows})
    for task in tasks:
        task_rows = sorted((r for r in rows if r["downstream_task"] == task),
                           key=lambda r: -r["downstream_accuracy_mean"])
        baseline = {r["architecture"]: r["downstream_accuracy_mean"] for r in task_rows
                    if r["objective"] == "none"}
        lines += [f"## {task}", "",
                  "| objective | architecture | layers | params | text tokens | FLOPs | "
                  "pretrain loss (train / eval) | accuracy | vs no pretraining | wall s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in task_rows:
            std = (f" ± {r['downstream_accuracy_std']:.3f}" if r["seeds"] > 1 else "")
            gain = r["downstream_accuracy_mean"] - baseline.get(r["architecture"], np.nan)
            lines.append(
                f"| {r['objective']} | {r['architecture']} | {r['layers']} | "
                f"{r['params'] / 1e6:.2f}M | {r['pretraining_tokens']:,} | "
                f"{r['pretraining_flops']:.2e} | {_fmt(r['final_pretraining_loss'])} / "
                f"{_fmt(r['final_eval_loss'])} | {r['downstream_accuracy_mean']:.3f}{std} | "
                f"{'—' if r['objective'] == 'none' else f'{gain:+.3f}'} | "
                f"{r['wall_seconds']:.0f} |")
        lines += ["", f"Majority-class accuracy: {task_rows[0]['majority_accuracy']:.3f}.", ""]
    lines += ["## Reference: the T5 paper, Table 4", "",
              "GLUE average of objectives pretrained on C4 (2^35 tokens) on one encoder-decoder "
              "(Raffel et al. 2020): " + ", ".join(f"{k} {v}" for k, v in
                                                   T5_TABLE4_GLUE.items()) + ".",
              "The paper's ordering is denoising (BERT-style, span corruption) > prefix LM > "
              "deshuffling." + ("" if same_architecture else
                                " This run pairs each objective with its natural architecture; "
                                "`--config.same_architecture=True` is the paper's setting."), ""]
    return "\n".join(lines)


def _curves(results: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Pretraining loss against text tokens per arm (seed 0), from each run's metrics.jsonl."""
    curves = {}
    for r in results:
        path = os.path.join(r["run_dir"], "metrics.jsonl")
        if r["objective"] == "none" or r["seed"] != 0 or not os.path.exists(path):
            continue
        per_step = r["text_tokens"] / max(r["steps"], 1)
        with open(path) as f:
            records = [json.loads(line) for line in f]
        points = [(x["step"] * per_step, x["loss"]) for x in records if x["split"] == "train"]
        curves[f"{r['objective']} ({r['family']})"] = ([p[0] for p in points],
                                                      [p[1] for p in points])
    return curves


def plot(results: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], path: str) -> None:
    """curves.png: pretraining loss vs text tokens, and the downstream accuracies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["downstream_task"] for r in rows})
    fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(6 + 5 * len(tasks), 4.5))
    ax = axes[0]
    for label, (tokens, losses) in _curves(results).items():
        ax.plot(tokens, losses, label=label)
    ax.set(xlabel="pretraining text tokens", ylabel="train loss (per objective)",
           title="Pretraining", yscale="log")
    ax.legend(fontsize=8)
    for ax, task in zip(axes[1:], tasks, strict=True):
        task_rows = sorted((r for r in rows if r["downstream_task"] == task),
                           key=lambda r: -r["downstream_accuracy_mean"])
        labels = [f"{r['objective']}\n{r['architecture']}" for r in task_rows]
        ax.bar(range(len(task_rows)), [r["downstream_accuracy_mean"] for r in task_rows],
               yerr=[r["downstream_accuracy_std"] for r in task_rows],
               color=["0.6" if r["objective"] == "none" else "C0" for r in task_rows])
        ax.axhline(task_rows[0]["majority_accuracy"], color="C3", linestyle="--",
                   label="majority class")
        ax.set_xticks(range(len(task_rows)), labels, fontsize=7, rotation=30)
        ax.set(ylabel="fine-tuned eval accuracy", title=f"Downstream: {task}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: Sequence[dict[str, Any]], tasks: Sequence[Any], workdir: str,
                 same_architecture: bool = False) -> list[dict[str, Any]]:
    """results.csv, results.md and curves.png in `workdir`; returns the CSV rows."""
    rows = summarize(results, [t.name for t in tasks])
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown(rows, same_architecture))
    plot(results, rows, os.path.join(workdir, "curves.png"))
    return rows
