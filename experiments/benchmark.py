"""Benchmarks: `train` (the train step), `compile` (compile time vs depth), `pipeline` (input).

Mode `train`: the full train step (forward, backward, AdamW; sharded and donated as in training)
at a preset or custom shape, with tokens/s, MFU, compile seconds and step memory, as a table or
`--json`; `--compare-hf` times transformers' Flax GPT-2 / BERT / T5 at the identical shape in the
same process, in alternating rounds, and prints the ratios (see docs/performance.md):

    python experiments/benchmark.py train --preset gpt2 --num_layers 6 --d_model 512 \
        --num_heads 8 --vocab_size 32128 --seq_len 256 --batch_size 8 --compare-hf --plain --from-hf
    python experiments/benchmark.py train --preset gpt2 --vocab_size 50304 --seq_len 1024 \
        --dtype bfloat16 --remat dots_with_no_batch_dims --batch_size 32          # on a GPU
    python experiments/benchmark.py compile --preset gpt2 --d_model 512 --num_heads 8 \
        --vocab_size 32128 --layers 2 24 --compare-hf

Expected runtime on 2 shared CPU cores: 3-10 minutes for the first command (about 1-2 s per step
per contender on an idle machine; three compiles), 1-3 minutes for `compile`. Expected result on
CPU: jaxlm's steps 1.03-1.07x HF's tokens/s with about half its step memory and a third of its
page faults, and a 24-layer jaxlm step compiling in about the time of a 2-layer one (scan over
layers). On an H100 / H200 in bf16: 30-41% MFU for 124M-355M models (docs/performance.md has the measured tables).

Mode `pipeline`: input-pipeline throughput per objective, on the host CPU only.

    python experiments/benchmark.py pipeline --objective span_corruption
    python experiments/benchmark.py pipeline --objective mlm --seq_len 512 --batch_size 64 \
        --vocab byte --batches 150 --json

Builds the training pipeline of jaxlm.data.pipeline on the offline default corpus (stdlib_docs,
prepared into --data_dir on first use, ~15 s), draws --warmup batches (graph building, the first
shuffle block), then times --batches batches and prints packed, objective-applied tokens per
second: the non-padding positions of the model's input streams, summed over the streams present
(encoder and decoder for encoder-decoder objectives; a position is real where its *_segment_ids is
> 0 when packed, else where encoder_input_tokens / decoder_target_tokens is non-zero), so padding
never counts. Also printed: batches/s and padding efficiency (real / all positions).
`--vocab sentencepiece` trains an 8192-id model on the corpus once (~5 s, cached in
--data_dir/vocab).

Expected runtime: 15-60 s per objective on a 2-core machine (TensorFlow start-up, ~7 s set-up and
warm-up, then the timed batches). Expected result: >= 100k tokens/s for every objective at the
defaults (seq_len 512, batch 64, default packing). Measured on 2 shared cores, 150 batches:

    objective        packing  byte       sentencepiece (8192)   padding efficiency
    clm              concat   1.65M/s    1.20M/s                1.000
    mlm              concat   0.52M/s    0.44M/s                1.000
    span_corruption  concat   1.21M/s    0.95M/s                1.000
    prefix_lm        greedy   1.22M/s    0.49M/s                0.986 / 0.988
    ul2              greedy   0.40M/s    0.16M/s                0.750 / 0.764
    mlm --packing greedy      0.23M/s    0.07M/s                0.986 / 0.987

Greedy packing runs the numpy objective once per document piece, so its speed follows the number
of documents per row (SentencePiece rows hold ~4x more documents than byte rows). UL2's padding
efficiency is the decoder's: its 512 target positions are sized for the longest denoiser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAMILY = {
    "clm": "decoder",
    "prefix_lm": "decoder",
    "mlm": "encoder",
    "span_corruption": "encoder_decoder",
    "ul2": "encoder_decoder",
}


def count_tokens(batch) -> tuple[int, int]:
    """(real, all) positions of the model input streams of a batch."""
    import numpy as np

    real = total = 0
    for stream, tokens_key in (
        ("encoder", "encoder_input_tokens"),
        ("decoder", "decoder_target_tokens"),
    ):
        if tokens_key not in batch:
            continue
        seg = batch.get(f"{stream}_segment_ids")
        mask = seg > 0 if seg is not None else batch[tokens_key] != 0
        real += int(np.count_nonzero(mask))
        total += mask.size
    return real, total


def run_pipeline(args: argparse.Namespace) -> dict:
    from jaxlm.data.pipeline import DataConfig, Pipeline

    family = args.family or FAMILY[args.objective]
    config = DataConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        seq_len=args.seq_len,
        vocab=args.vocab,
        vocab_size=args.vocab_size if args.vocab == "sentencepiece" else None,
        packing=args.packing,
    )
    start = time.perf_counter()
    pipe = Pipeline(
        config,
        objective=args.objective,
        family=family,
        global_batch_size=args.batch_size,
        process_index=0,
        process_count=1,
    )
    it = pipe.iterator()
    for _ in range(args.warmup):
        next(it)
    setup = time.perf_counter() - start
    real = total = 0
    start = time.perf_counter()
    for _ in range(args.batches):
        r, t = count_tokens(next(it))
        real, total = real + r, total + t
    elapsed = time.perf_counter() - start
    it.close()
    result = {
        "mode": "pipeline",
        "objective": args.objective,
        "family": family,
        "packing": pipe.layout.packing,
        "lengths": pipe.layout.lengths,
        "vocab": args.vocab,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "tokens_per_second": real / elapsed,
        "batches_per_second": args.batches / elapsed,
        "padding_efficiency": real / max(total, 1),
        "seconds": elapsed,
        "setup_seconds": setup,
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.objective} ({family}, {pipe.layout.packing}, lengths {pipe.layout.lengths}, "
            f"{args.vocab}): {result['tokens_per_second']:,.0f} tokens/s, "
            f"{result['batches_per_second']:.2f} batches/s of {args.batch_size}, padding "
            f"efficiency {result['padding_efficiency']:.3f} ({args.batches} batches in "
            f"{elapsed:.1f}s after {setup:.1f}s set-up and {args.warmup} warm-up batches)"
        )
    return result


def _optim(steps: int) -> "OptimConfig":
    from jaxlm.optim import OptimConfig

    return OptimConfig(learning_rate=1e-4, warmup_steps=0, total_steps=max(steps, 1),
                       schedule="constant")


def run_train(args: argparse.Namespace) -> dict:
    import bench_train as bt

    cfg = bt.model_config(args)
    dec_len = args.decoder_len or args.seq_len
    batch = bt.random_batch(cfg, args.batch_size, args.seq_len, dec_len)
    optim = _optim(args.steps)
    contenders = [bt.jaxlm_contender(cfg, optim, batch)]
    for text in args.variant:
        name, changes = bt.parse_variant(text)
        fused = changes.pop("fused_loss", True)
        contenders.append(bt.jaxlm_contender(cfg.replace(**changes), optim, batch,
                                             fused_loss=fused, name=name))
    if args.plain:
        contenders.append(bt.jaxlm_plain_contender(cfg, optim, batch))
    if args.from_hf:
        contenders.append(bt.from_hf_contender(cfg, optim, batch))
    if args.compare_hf:
        contenders.append(bt.hf_contender(cfg, optim, batch))
    peaks = bt.time_alternating(contenders, args.rounds, args.steps)
    result = bt.report(cfg, contenders, args.batch_size, args.seq_len, dec_len, peaks)
    result.update(mode="train", config={k: v for k, v in vars(args).items() if k != "func"},
                  model={"attention_impl": cfg.attention_impl, "d_ff": cfg.d_ff})
    print(json.dumps(result) if args.json
          else _describe(cfg, args) + "\n" + bt.format_table(result))
    return result


def run_compile(args: argparse.Namespace) -> dict:
    import bench_train as bt

    # The fastest of --repeats compiles per depth, depths alternating: on a shared machine the
    # minimum is the compile's own cost, anything above it is other processes.
    rows: dict[int, dict[str, float]] = {}
    for _ in range(args.repeats):
        for layers in args.layers:
            args.num_layers = layers
            cfg = bt.model_config(args)
            dec_len = args.decoder_len or args.seq_len
            batch = bt.random_batch(cfg, args.batch_size, args.seq_len, dec_len)
            row = rows.setdefault(layers, {})
            seconds = {"jaxlm": bt.jaxlm_contender(cfg, _optim(1), batch, True).compile_seconds}
            if args.compare_hf:
                seconds["hf"] = bt.hf_contender(cfg, _optim(1), batch, True).compile_seconds
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


def _describe(cfg, args: argparse.Namespace) -> str:
    return (f"{cfg.family} L{cfg.num_layers} D{cfg.d_model} H{cfg.num_heads} F{cfg.d_ff} "
            f"T{args.seq_len} B{args.batch_size} V{cfg.vocab_size} {cfg.dtype}, scan "
            f"{cfg.scan_layers}, remat {cfg.remat_policy}, attention {cfg.attention_impl}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)

    p = modes.add_parser("pipeline", help="input pipeline tokens/s for one objective")
    p.add_argument("--objective", required=True, choices=sorted(FAMILY))
    p.add_argument(
        "--family",
        default=None,
        choices=["decoder", "encoder", "encoder_decoder"],
        help="model family (default: the objective's usual one)",
    )
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=64, help="global = local batch (1 process)")
    p.add_argument("--vocab", default="byte", help="byte | sentencepiece | path/to/x.model")
    p.add_argument("--vocab_size", type=int, default=8192, help="for --vocab sentencepiece")
    p.add_argument("--packing", default="auto", choices=["auto", "concat", "greedy", "none"])
    p.add_argument("--dataset", default="stdlib_docs")
    p.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    p.add_argument("--batches", type=int, default=100, help="timed batches")
    p.add_argument("--warmup", type=int, default=10, help="untimed batches first")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=run_pipeline)

    for name, help_text, func in (
            ("train", "full train step tokens/s, MFU, compile time, memory", run_train),
            ("compile", "compile seconds of the train step at several depths", run_compile)):
        t = modes.add_parser(name, help=help_text)
        t.add_argument("--preset", default=None, help="default: gpt2 / bert_base / t5_base")
        t.add_argument("--family", default=None, choices=["decoder", "encoder", "encoder_decoder"])
        for flag in ("d_model", "num_heads", "num_layers", "d_ff", "vocab_size"):
            t.add_argument(f"--{flag}", type=int, default=None)
        t.add_argument("--seq_len", type=int, default=256)
        t.add_argument("--decoder_len", type=int, default=None, help="encoder_decoder only")
        t.add_argument("--batch_size", type=int, default=8)
        t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
        t.add_argument("--remat", default=None,
                       choices=["none", "full", "dots", "dots_with_no_batch_dims"],
                       help="default: the model's (dots_with_no_batch_dims)")
        t.add_argument("--scan", action=argparse.BooleanOptionalAction, default=True,
                       help="scan over layers (--no-scan unrolls)")
        t.add_argument("--attention", default="auto", choices=["auto", "xla", "dot_product"])
        t.add_argument("--compare-hf", action="store_true", help="time transformers' Flax model")
        t.add_argument("--json", action="store_true", help="print one JSON line")
        t.set_defaults(func=func)
        if name == "train":
            t.add_argument("--steps", type=int, default=3, help="steps per timed round")
            t.add_argument("--rounds", type=int, default=3, help="alternating rounds")
            t.add_argument("--plain", action="store_true",
                           help="also time the model's own forward+backward (optax loss)")
            t.add_argument("--from-hf", action="store_true",
                           help="also time a GPT-2 imported with jaxlm.hf.from_hf (plain step)")
            t.add_argument("--variant", action="append", default=[],
                           help="another jaxlm step, NAME:field=value,... (ModelConfig fields "
                                "or fused_loss), e.g. logits:fused_loss=false")
        else:
            t.add_argument("--layers", type=int, nargs="+", default=[2, 24])
            t.add_argument("--repeats", type=int, default=3, help="compiles per depth (min)")

    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.mode == "pipeline":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the pipeline never needs an accelerator
    args.func(args)


if __name__ == "__main__":
    main()
