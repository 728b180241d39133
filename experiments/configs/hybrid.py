"""GPT-BERT's hybrid: masked next-token prediction (bidirectional, 15% masked) with 1/16 of the
examples causal, on one decoder-only Transformer.

Launch (local; tiny runs on a laptop CPU with the offline corpus, no download):
    python experiments/pretrain.py --config=experiments/configs/hybrid.py:tiny \
        --workdir=runs/hybrid_tiny

Cloud TPU (small / base: C4 and a SentencePiece vocabulary trained on it, every worker):
    bash tpu_setup.sh run python experiments/pretrain.py \
        --config=experiments/configs/hybrid.py:small --workdir=gs://BUCKET/runs/hybrid_small \
        --multihost

Expected: tiny: 2-4 minutes on 2 CPU cores (1 min 40 s measured while the machine was shared),
final validation loss 2.24 nats per target byte after 500 steps, over masked tokens and causal
examples' tokens together (a token's loss weighs the same in both modes, so the 1/16 causal
examples give about 30% of the weight; the corpus's unigram cross-entropy is 3.29). small / base:
not run in this repository; the launch lines are what a pod run uses (bf16, data.shards=-1).
"""

from experiments.configs.common import base_config


def get_config(size: str = "tiny"):
    """Sizes: tiny | small | base (see experiments/configs/common.py)."""
    return base_config("hybrid", size)
