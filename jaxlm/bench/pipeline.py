"""Mode `pipeline`: input-pipeline throughput per objective, on the host CPU only.

Builds the training pipeline of jaxlm.data.pipeline, draws --warmup batches (graph building, the
first shuffle block), then times --batches batches and counts the non-padding positions of the
model's input streams, summed over the streams present, so padding never counts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping

import numpy as np

from jaxlm.config import NATURAL_FAMILY
from jaxlm.data.pipeline import DataConfig, Pipeline



def count_tokens(batch: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(real, all) positions of the model input streams of a batch: a position is real where
    its *_segment_ids is > 0 when packed, else where encoder_input_tokens /
    decoder_target_tokens is non-zero."""
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
    """--batches batches timed after --warmup untimed ones; packed, objective-applied tokens/s."""
    family = args.family or NATURAL_FAMILY[args.objective]
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
