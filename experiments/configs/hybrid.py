"""GPT-BERT's hybrid: masked next-token prediction (bidirectional, 15% masked) with 1/16 of the
examples causal, on one decoder-only Transformer.

Launch (local; tiny runs on a laptop CPU with the offline corpus, no download):
    python experiments/pretrain.py --config=experiments/configs/hybrid.py:tiny \
        --workdir=runs/hybrid_tiny

Cloud TPU (small / base: C4 and a SentencePiece vocabulary trained on it, every worker):
    bash tpu_setup.sh run python experiments/pretrain.py \
        --config=experiments/configs/hybrid.py:small --workdir=gs://BUCKET/runs/hybrid_small \
        --multihost

Expected: RUNTIME
"""

from experiments.configs.common import base_config


def get_config(size: str = "tiny"):
    """Sizes: tiny | small | base (see experiments/configs/common.py)."""
    return base_config("hybrid", size)
