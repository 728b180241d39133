"""The command line of experiments/benchmark.py: one parser, one mode per subcommand.

Each mode's module is imported only when that mode runs, so `pipeline` never touches an
accelerator and transformers is imported only by the contenders that need it.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any

from jaxlm import cli
from jaxlm.config import NATURAL_FAMILY, ConfigError, get_config
from jaxlm.conventions import FAMILIES
from jaxlm.models.config import ATTENTION_IMPLS, REMAT_POLICIES

DEFAULT_LOOP_CONFIG = f"{Path(__file__).resolve().parents[2] / 'experiments/configs/clm.py'}:tiny"
# mode -> (module in jaxlm.bench, function)
MODES = {"pipeline": ("pipeline", "run_pipeline"), "train": ("train", "run_train"),
         "compile": ("train", "run_compile"), "attention": ("attention", "run_attention"),
         "loop": ("loop", "run_loop")}


def _pipeline_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", required=True, choices=sorted(NATURAL_FAMILY))
    p.add_argument("--family", default=None, choices=FAMILIES,
                   help="model family (default: the objective's usual one)")
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=64, help="global = local batch (1 process)")
    p.add_argument("--vocab", default="byte", help="byte | sentencepiece | path/to/x.model")
    p.add_argument("--vocab_size", type=int, default=8192, help="for --vocab sentencepiece")
    p.add_argument("--packing", default="auto", choices=["auto", "concat", "greedy", "none"])
    p.add_argument("--dataset", default="stdlib_docs")
    p.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    p.add_argument("--batches", type=int, default=100, help="timed batches")
    p.add_argument("--warmup", type=int, default=10, help="untimed batches first")


def _step_flags(t: argparse.ArgumentParser) -> None:
    """The shape and step options shared by `train` and `compile`."""
    t.add_argument("--preset", default=None, help="default: gpt2 / bert_base / t5_base")
    t.add_argument("--family", default=None, choices=FAMILIES)
    for flag in ("d_model", "num_heads", "num_layers", "d_ff", "vocab_size"):
        t.add_argument(f"--{flag}", type=int, default=None)
    t.add_argument("--seq_len", type=int, default=256)
    t.add_argument("--decoder_len", type=int, default=None, help="encoder_decoder only")
    t.add_argument("--batch_size", type=int, default=8)
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    t.add_argument("--remat", default=None,
                   choices=REMAT_POLICIES,
                   help="default: the model's (dots_with_no_batch_dims)")
    t.add_argument("--scan", action=argparse.BooleanOptionalAction, default=True,
                   help="scan over layers (--no-scan unrolls)")
    t.add_argument("--attention", default="auto", choices=ATTENTION_IMPLS)
    t.add_argument("--compare-hf", action="store_true", help="time transformers' Flax model")


def _train_flags(t: argparse.ArgumentParser) -> None:
    t.add_argument("--steps", type=int, default=3, help="steps per timed round")
    t.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    t.add_argument("--plain", action="store_true",
                   help="also time the model's own forward+backward (optax loss)")
    t.add_argument("--from-hf", action="store_true",
                   help="also time a GPT-2 imported with jaxlm.hf.from_hf (plain step)")
    t.add_argument("--variant", action="append", default=[],
                   help="another jaxlm step, NAME:field=value,... (ModelConfig fields or "
                        "fused_loss), e.g. logits:fused_loss=false")


def _compile_flags(t: argparse.ArgumentParser) -> None:
    t.add_argument("--layers", type=int, nargs="+", default=[2, 24])
    t.add_argument("--repeats", type=int, default=3, help="compiles per depth (min)")


def _attention_flags(a: argparse.ArgumentParser) -> None:
    a.add_argument("--batch_size", type=int, default=32)
    a.add_argument("--seq_len", type=int, default=1024)
    a.add_argument("--num_heads", type=int, default=12)
    a.add_argument("--head_dim", type=int, default=64)
    a.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    a.add_argument("--repeats", type=int, default=20, help="timed calls per kernel (median)")


def _loop_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_LOOP_CONFIG,
                   help="path/to/config.py[:arg], as pretrain.py's --config (default: "
                        "experiments/configs/clm.py:tiny)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="a config override, e.g. --set train.batch_size=8 (repeatable)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per side and round")
    p.add_argument("--warmup", type=int, default=10,
                   help="untimed steps first (rounded up to a multiple of train.log_every)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")


def build_parser() -> argparse.ArgumentParser:
    """Every mode and its flags."""
    parser = cli.ArgumentParser(
        prog="benchmark.py",
        epilog=cli.run_config_epilog(get_config(), "the loop mode's --config file and its "
                                     "--set SECTION.FIELD=VALUE overrides"),
        description="jaxlm benchmarks: train step, compile time, input pipeline, attention "
                    "kernels, training-loop overhead")
    modes = parser.add_subparsers(dest="mode", required=True)
    specs = (
        ("pipeline", "input pipeline tokens/s for one objective", (_pipeline_flags,)),
        ("train", "full train step tokens/s, MFU, compile time, memory",
         (_step_flags, _train_flags)),
        ("compile", "compile seconds of the train step at several depths",
         (_step_flags, _compile_flags)),
        ("attention", "one attention layer's forward + backward per kernel", (_attention_flags,)),
        ("loop", "the trainer loop's tokens/s vs the bare jitted step (host overhead)",
         (_loop_flags,)),
    )
    for name, help_text, adders in specs:
        sub = modes.add_parser(name, help=help_text)
        for add in adders:
            add(sub)
        sub.add_argument("--json", action="store_true", help="print one JSON line")
    return parser


def main(argv: list[str] | None = None) -> Any:
    """Parses `argv`, runs the mode and returns its result (the dict it printed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.mode == "pipeline" and "JAX_PLATFORMS" not in os.environ:
        import jax

        jax.config.update("jax_platforms", "cpu")  # the pipeline never needs an accelerator
    if getattr(args, "compare_hf", False) or getattr(args, "from_hf", False):
        from jaxlm.bench.hf_models import MissingDependency, require_transformers

        try:
            if args.compare_hf:
                require_transformers("--compare-hf")
            if getattr(args, "from_hf", False):
                require_transformers("--from-hf", torch=True)
        except MissingDependency as error:
            parser.exit(2, f"{parser.prog} {args.mode}: error: {error}\n")
    module, function = MODES[args.mode]
    if args.mode == "loop":  # its config errors come first, before anything compiles
        try:
            args.config_dict = cli.load_config_file(args.config)
            cli.apply_overrides(args.config_dict, args.set)
        except ValueError as error:
            parser.exit(2, f"{parser.prog} loop: config error: {error}\n")
    try:
        return getattr(importlib.import_module(f"jaxlm.bench.{module}"), function)(args)
    except ConfigError as error:  # the loop's config, named field and value
        parser.exit(2, f"{parser.prog} {args.mode}: config error: {error}\n")
