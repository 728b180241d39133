"""Modes `train` (the train step's speed, side by side) and `compile` (compile time vs depth)."""

from __future__ import annotations

import argparse
import json

from jaxlm.bench import report as report_lib
from jaxlm.bench import step
from jaxlm.models import ModelConfig


def describe(cfg: ModelConfig, args: argparse.Namespace) -> str:
    """One line naming the shape and the options that change the step's speed."""
    return (f"{cfg.family} L{cfg.num_layers} D{cfg.d_model} H{cfg.num_heads} F{cfg.d_ff} "
            f"T{args.seq_len} B{args.batch_size} V{cfg.vocab_size} {cfg.dtype}, scan "
            f"{cfg.scan_layers}, remat {cfg.remat_policy}, attention {cfg.attention_impl}")


def run_train(args: argparse.Namespace) -> dict:
    """Every requested contender compiled, timed in alternating rounds and reported."""
    cfg = step.model_config(args)
    dec_len = args.decoder_len or args.seq_len
    batch = step.random_batch(cfg, args.batch_size, args.seq_len, dec_len)
    optim = step.bench_optim(args.steps)
    contenders = [step.jaxlm_contender(cfg, optim, batch)]
    for text in args.variant:
        name, changes = step.parse_variant(text)
        fused = changes.pop("fused_loss", True)
        contenders.append(step.jaxlm_contender(cfg.replace(**changes), optim, batch,
                                               fused_loss=fused, name=name))
    if args.plain:
        contenders.append(step.jaxlm_plain_contender(cfg, optim, batch))
    if args.from_hf or args.compare_hf:
        from jaxlm.bench import hf_models  # transformers only inside these contenders

        if args.from_hf:
            contenders.append(hf_models.from_hf_contender(cfg, optim, batch))
        if args.compare_hf:
            contenders.append(hf_models.hf_contender(cfg, optim, batch))
    peaks = step.time_alternating(contenders, args.rounds, args.steps)
    result = report_lib.report(cfg, contenders, args.batch_size, args.seq_len, dec_len, peaks)
    result.update(mode="train", config={k: v for k, v in vars(args).items() if k != "func"},
                  model={"attention_impl": cfg.attention_impl, "d_ff": cfg.d_ff})
    print(json.dumps(result) if args.json
          else describe(cfg, args) + "\n" + report_lib.format_table(result))
    return result


def run_compile(args: argparse.Namespace) -> dict:
    """The fastest of --repeats compiles per depth, depths alternating: on a shared machine the
    minimum is the compile's own cost, anything above it is other processes. The train state
    stays abstract, so only compilation is timed."""
    rows: dict[int, dict[str, float]] = {}
    for _ in range(args.repeats):
        for layers in args.layers:
            cfg = step.model_config(argparse.Namespace(**{**vars(args), "num_layers": layers}))
            dec_len = args.decoder_len or args.seq_len
            batch = step.random_batch(cfg, args.batch_size, args.seq_len, dec_len)
            row = rows.setdefault(layers, {})
            optim = step.bench_optim(1)
            seconds = {"jaxlm": step.jaxlm_contender(cfg, optim, batch, True).compile_seconds}
            if args.compare_hf:
                from jaxlm.bench import hf_models

                seconds["hf"] = hf_models.hf_contender(cfg, optim, batch, True).compile_seconds
            for name, value in seconds.items():
                row[name] = min(row.get(name, float("inf")), value)
    result = {"mode": "compile", "compile_seconds": rows}
    if args.json:
        print(json.dumps(result))
    else:
        first, last = args.layers[0], args.layers[-1]
        for name in rows[first]:
            times = ", ".join(f"L{k}: {v[name]:.1f}s" for k, v in rows.items())
            print(f"{name:6s} compile {times}; L{last} / L{first} = "
                  f"{rows[last][name] / rows[first][name]:.2f}x")
    return result
