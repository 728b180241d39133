"""The objective comparison on one H100/H200-class GPU: ~25M-parameter arms, ~10 minutes.

Launch (one GPU; `pip install -e ".[gpu]"`, see README "GPU"):
    python experiments/compare_objectives.py --config=experiments/configs/compare_gpu.py \
        --workdir=runs/compare_gpu

NOT run yet: no GPU was available when this was written, so the runtime below is the sizing, not
a measurement. The same five arms, three no-pretraining baselines, held-out evaluation and report
as the CPU default (jaxlm/compare.py), ~7x wider in parameters and ~4,000x in compute: d_model
512, 8 heads, GeGLU with d_ff 1024, 8 layers (decoder, encoder) or 4+4 with d_ff narrowed to 680
(encoder-decoder), an 8,192-id SentencePiece vocabulary trained on the pretraining split, seq_len
256, batch 256 (65,536 tokens a step), bf16 compute, no CPU device split. Parameters: decoder and
encoder 25.17M, encoder-decoder 25.14M (0.1% apart; the limit is 10%).

Sizing. Pretraining gets ~7 minutes for all five arms at 40% MFU of an H100's dense bf16 peak
(989 TFLOP/s), leaving ~3 minutes for evaluating 8 models (probes, low-data fine-tuning, minimal
pairs, compiles):
    0.40 x 989e12 FLOP/s = 3.956e14 FLOP/s;  x 420 s = 1.66e17 FLOPs;  / 5 arms = 3.3e16 per arm
    pretrain.flops = 3.3e16  ->  5 x 3.3e16 / 3.956e14 = 417 s = 6.95 minutes of pretraining.
Per step (jaxlm.flops, batch 256): CLM, prefix LM, MLM 1.07e13 FLOPs -> 3,078 steps, 2.02e8 text
tokens; span corruption 5.95e12 (its decoder reads only the targets) -> 5,546 steps, 4.03e8;
UL2 1.11e13 -> 2,968 steps, 1.93e8. Expected runtime: ~10 minutes at 40% MFU.

Repetition. The offline corpus is 1.8 MB of pretraining text (1,805,372 characters), 474,947
tokens with this vocabulary, so at this budget every arm reads it 400-850 times (UL2 406, the
decoders and encoder 425, span corruption 849). The T5 paper's Table 9 measured repetition at
2^35 tokens: 64 repeats cost little (82.87 vs 83.28 GLUE without repetition), 256 and more hurt
(training loss falls below validation loss: memorisation). Every arm here is past that point on
the offline corpus, so the GPU budget buys memorisation as much as learning; for a comparison that
is not data-limited, give it more text (`--config.data.dataset=c4/en:3.1.0
--config.data.data_dir=...`; the evaluation is unchanged). The 40% MFU is a target, not a
measurement: a 512-wide model may reach less than the 355M decoder of README "GPU" (40.7%), in
which case pretraining takes longer than 7 minutes.
"""

import ml_collections

from jaxlm.compare import get_config as default_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config()
    c.num_cpu_devices = 0  # on GPU: the accelerator, not the host's cores
    c.model.update(d_model=512, num_heads=8, d_ff=1024, num_layers=8, dtype="bfloat16")
    # The library's scanned, rematerialised layers (the CPU default unrolls its few small ones).
    c.model.update(scan_layers=True, remat_policy="dots_with_no_batch_dims")
    c.data.update(vocab_size=8192, seq_len=256, shuffle_buffer=8192)
    c.pretrain.update(flops=3.3e16, batch_size=256, learning_rate=1e-3, warmup_steps=200,
                      log_every=100, eval_batches=8)
    c.evaluation.update(batch_size=512)
    return c
