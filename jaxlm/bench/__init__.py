"""Benchmarks behind experiments/benchmark.py, one module per concern.

cli.py (the parser, one subcommand per mode); train.py (modes `train` and `compile`) over
step.py (the compiled contenders and their alternating timing), hf_models.py (transformers'
contenders, an optional dependency) and report.py (tokens/s, MFU, memory, the table);
pipeline.py (input pipeline tokens/s); attention.py (attention kernels); loop.py (the training
loop's host overhead).
"""
