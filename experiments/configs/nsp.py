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

Expected: tiny: about 90 s on 2 CPU cores (start-up included), after 500 steps a validation loss
of 2.09 (the MLM and NSP terms together; MLM accuracy 0.42), nsp_loss 0.63 and next-sentence
accuracy 0.61 on the 80 validation pairs (binomial 95% interval about +-0.11 around it, against
0.5 for chance: at this size the pair task is barely learnt). Half the pairs are NotNext at any
seq_len: their B comes from a random document of the split (jaxlm/data/negatives.py).
small / base: not run in this repository; the launch lines are what a pod run uses (bf16,
data.shards=-1).
"""

from experiments.configs.common import base_config


def get_config(size: str = "tiny"):
    """Sizes: tiny | small | base (see experiments/configs/common.py)."""
    return base_config("nsp", size)
