"""BERT's pretraining: masked LM (15%, 80/10/10) plus next-sentence prediction on [CLS] A [SEP] B
[SEP] (B from another document half of the time), on an encoder-only Transformer with token types
and a pooled [CLS] classification head (model.classifier_classes=2, set by the objective).

Launch (local; tiny runs on a laptop CPU with the offline corpus, no download):
    python experiments/pretrain.py --config=experiments/configs/nsp.py:tiny \
        --workdir=runs/nsp_tiny

Cloud TPU (small / base: C4 and a SentencePiece vocabulary trained on it, every worker):
    bash tpu_setup.sh run python experiments/pretrain.py \
        --config=experiments/configs/nsp.py:small --workdir=gs://BUCKET/runs/nsp_small \
        --multihost

Expected: tiny: under a minute on 2 idle CPU cores (46 s measured), after 500 steps a validation
loss of 2.66 (the MLM and NSP terms together), nsp_loss 0.55 and next-sentence accuracy 0.77. At
this preset's seq_len 128 and batch 32, 40% of the pairs are NotNext: a batch often lies inside one
long document of the corpus, and then nothing in it can serve as a negative (see
jaxlm/objectives/nsp.py). small / base: not run in this repository; the launch lines are what a pod
run uses (bf16, data.shards=-1).
"""

from experiments.configs.common import base_config


def get_config(size: str = "tiny"):
    """Sizes: tiny | small | base (see experiments/configs/common.py)."""
    return base_config("nsp", size)
