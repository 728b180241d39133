"""Prefix language modelling (bidirectional prefix, uniform split point) on a decoder.

Launch (local; tiny runs on a laptop CPU with the offline corpus, no download):
    python experiments/pretrain.py --config=experiments/configs/prefix_lm.py:tiny \
        --workdir=runs/prefix_lm_tiny

Cloud TPU (small / base: C4 and a SentencePiece vocabulary trained on it, every worker):
    bash tpu_setup.sh run python experiments/pretrain.py \
        --config=experiments/configs/prefix_lm.py:small --workdir=gs://BUCKET/runs/prefix_lm_small \
        --multihost

Expected: tiny: 2.5 minutes on 2 CPU cores (measured while the machine was shared), final
validation loss about 2.00 nats per target byte after 500 steps (the corpus's unigram
cross-entropy is 3.29). small / base: not run in this repository; the launch lines are what a
pod run uses (bf16, data.shards=-1).
"""

from experiments.configs.common import base_config


def get_config(size: str = "tiny"):
    """Sizes: tiny | small | base (see experiments/configs/common.py)."""
    return base_config("prefix_lm", size)
