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

Expected: tiny: 2-4 minutes on 2 CPU cores (1 min 48 s measured while the machine was shared),
after 500 steps a validation MLM loss of 2.10 nats per masked byte and next-sentence accuracy
0.84 (nsp_loss 0.42; at seq_len 128 about 27% of the corpus's pairs are NotNext, since its
documents often fill a whole window: see jaxlm/objectives/nsp.py). small / base: not run in this
repository; the launch lines are what a pod run uses (bf16, data.shards=-1).
"""

from experiments.configs.common import base_config


def get_config(size: str = "tiny"):
    """Sizes: tiny | small | base (see experiments/configs/common.py)."""
    return base_config("nsp", size)
