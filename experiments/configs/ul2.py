"""The UL2 mixture of denoisers (R, S and X, with mode tokens) on an encoder-decoder.

Launch (local; tiny runs on a laptop CPU with the offline corpus, no download):
    python experiments/pretrain.py --config=experiments/configs/ul2.py:tiny \
        --workdir=runs/ul2_tiny

Cloud TPU (small / base: C4 and a SentencePiece vocabulary trained on it, every worker):
    bash tpu_setup.sh run python experiments/pretrain.py \
        --config=experiments/configs/ul2.py:small --workdir=gs://BUCKET/runs/ul2_small \
        --multihost

Expected: tiny: 3-6.5 minutes on 2 CPU cores (measured while the machine was shared), final
validation loss about 2.57 nats per target byte after 500 steps (the corpus's unigram
cross-entropy is 3.29). small / base: not run in this repository; the launch lines are what a
pod run uses (bf16, data.shards=-1).
"""

from experiments.configs.common import base_config


def get_config(size: str = "tiny"):
    """Sizes: tiny | small | base (see experiments/configs/common.py)."""
    return base_config("ul2", size)
