"""The objective comparison at the T5 paper's scale (Table 4): C4, 2^35 tokens, GLUE.

Launch on a Cloud TPU pod slice (every worker; see README "Running on Cloud TPU"):
    bash tpu_setup.sh run experiments/compare_objectives.py --multihost \
        --config=experiments/configs/compare_t5_scale.py --workdir=gs://BUCKET/compare_t5 \
        --config.data.data_dir=gs://BUCKET/tfds

Prepare once, on a machine with network access, into the same data_dir: c4/en:3.1.0 (Apache Beam)
and the GLUE tasks (`tfds build glue/cola glue/sst2 glue/mrpc glue/qqp glue/mnli glue/qnli glue/rte
--data_dir=gs://BUCKET/tfds`). Nothing here has been run at this scale in this repository: at
2^35 tokens per arm, the T5-base-sized encoder-decoder needs ~1.3e20 FLOPs per arm (6 x 220M x
2^35), about 3 days per arm on a v4-32 at 50% MFU. The expected ordering is the paper's: BERT-style
82.96 > prefix LM 80.69 GLUE average (span corruption ~ BERT-style in its Table 5).

Pretraining uses T5's optimizer: Adafactor (factored second moments, decay rate 0.8, update
clipping at 1.0, no first moment, updates scaled by the parameters' RMS) with the relative
learning rate 1e-2 held for 10k warmup steps, then decayed as 1/sqrt(step); no weight decay and
no global-norm clipping.
"""

from jaxlm.compare import get_config as default_config


def get_config():
    c = default_config()
    c.same_architecture = True  # the paper's setting: every objective on one encoder-decoder
    c.objectives = "mlm,span_corruption,prefix_lm,ul2"
    c.model.preset = "base"
    c.model.update(d_model=768, num_heads=12, d_ff=3072, num_layers=24, dtype="bfloat16")
    # The library's scanned, rematerialised layers (the CPU default unrolls its few small ones).
    c.model.update(scan_layers=True, remat_policy="dots_with_no_batch_dims")
    c.data.update(dataset="c4/en:3.1.0", vocab="sentencepiece", vocab_size=32128, seq_len=512,
                  shuffle_buffer=10_000, window=512, shards=-1)
    c.pretrain.update(budget="tokens", tokens=2**35, batch_size=128, learning_rate=1e-2,
                      schedule="rsqrt", warmup_steps=10_000, log_every=100, eval_batches=50)
    c.pretrain.optim.update(dict(name="adafactor", weight_decay=0.0, grad_clip_norm=0.0))
    c.pretrain.optim.adafactor.update(dict(multiply_by_parameter_scale=True, decay_rate=0.8,
                                           clipping_threshold=1.0, momentum=None, factored=True))
    c.finetune.update(mode="full",
                      tasks="glue/cola,glue/sst2,glue/mrpc,glue/qqp,glue/mnli,glue/qnli,glue/rte",
                      steps=2**18 // 128, batch_size=128, learning_rate=1e-4, eval_every=1000,
                      seq_len=512)
    c.mesh.update(data=-1, fsdp=4, tensor=1)
    return c
