"""Shared settings of the per-objective experiment configs (experiments/configs/<objective>.py).

Sizes: `tiny` runs on a laptop CPU in minutes (byte vocabulary, offline corpus); `small` (~60M
params with a 32k vocabulary) and `base` (~220M, T5-base sized) are Cloud TPU / GPU configs on C4
with a SentencePiece vocabulary trained on it (T5's public one works too: data.vocab=PATH.model).
"""

from __future__ import annotations

import ml_collections

from jaxlm import config as config_lib

SIZES = ("tiny", "small", "base")


def base_config(objective: str, size: str) -> ml_collections.ConfigDict:
    """The default config for `objective` at `size`, with the natural model family."""
    if size not in SIZES:
        raise ValueError(f"config size {size!r} is invalid: expected one of {', '.join(SIZES)}")
    config = config_lib.get_config()
    config.objective = objective
    config.model.preset = size
    config.model.family = config_lib.NATURAL_FAMILY[objective]
    if size == "tiny":
        # The offline corpus, bytes, a few minutes on 2 CPU cores.
        config.data.seq_len = 128
        config.train.batch_size = 32
        config.train.steps = 500
        config.train.eval_every = 100
        config.optim.learning_rate = 3e-3
        config.optim.schedule = "cosine"
        config.optim.warmup_steps = 50
        config.checkpoint.every_steps = 250
        return config
    # C4 as T5 trained on it (prepare it once with `tfds build c4/en --data_dir=gs://...`).
    config.data.dataset = "c4/en:3.1.0"
    config.data.eval_split = "validation"
    config.data.vocab = "sentencepiece"
    config.data.vocab_size = 32128
    config.data.seq_len = 512
    config.data.shards = -1  # one input shard per host: every host reads its own part
    config.train.batch_size = 256 if size == "small" else 512
    config.train.steps = 100_000
    config.train.eval_every = 2000
    config.train.eval_batches = 50
    config.optim.learning_rate = 1e-3 if size == "small" else 5e-4
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 2000
    config.model.dtype = "bfloat16"
    config.mesh.data = -1
    config.mesh.fsdp = 1 if size == "small" else 4
    config.checkpoint.every_steps = 2000
    return config
