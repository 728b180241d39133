"""Benchmarks. Mode `pipeline`: input-pipeline throughput per objective, on the host CPU only.

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

    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the pipeline never needs an accelerator
    args.func(args)


if __name__ == "__main__":
    main()
