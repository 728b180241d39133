"""jaxlm: Transformer language models in JAX/Flax and a fair comparison of pretraining objectives."""

__version__ = "0.1.0"
