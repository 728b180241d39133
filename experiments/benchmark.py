"""Benchmarks: `train` (the train step), `compile` (compile time vs depth), `pipeline` (input),
`attention` (attention kernels), `loop` (the training loop's host overhead). The logic lives in
jaxlm/bench/ (jaxlm.bench.commands parses this command line).

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

Mode `attention`: one attention layer's forward + backward per kernel (cuDNN with a full mask,
cuDNN's built-in causal mask, jaxlm's `auto` on a causal and a padded mask, the einsum `xla`),
median of --repeats calls, after checking `auto` against `xla`:

    python experiments/benchmark.py attention  # B32 T1024 H12 D64 bf16; ~30 s on an H100

The cuDNN kernels need a GPU and are skipped elsewhere (the rest runs on CPU, e.g. with
--seq_len 256 --dtype float32). Expected result on an H200: cuDNN's causal mask ~1.85x faster
than the full mask (docs/performance.md).

Mode `loop`: the training loop's host overhead. jaxlm.trainer.train's loop against the same
compiled step called back to back on pre-placed batches of the same pipeline; prints both
tokens/s, the host's milliseconds per step (wall and CPU time) and the fraction of each loop step
the device waits:

    python experiments/benchmark.py loop  # experiments/configs/clm.py:tiny, 100 steps, 3 rounds
    python experiments/benchmark.py loop --config experiments/configs/span_corruption.py:tiny \
        --set train.batch_size=8 --steps 50 --rounds 1 --json

Expected runtime on 2 shared CPU cores: about 4 minutes for the first command (every round
builds the trainer's pipeline and compiles its step; 5m23s with --rounds 5). Expected result on
CPU (docs/performance.md, "Host overhead of the loop"): the trainer adds about 5.6 ms of host CPU
time to a 74 ms tiny step; its wall-clock overhead is below a loaded machine's noise.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxlm.bench.commands import main  # noqa: E402

if __name__ == "__main__":
    main()
