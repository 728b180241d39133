"""Generate from a trained model: continue a prompt, fill <extra_id_N> spans, or fill [MASK]s.

    # decoder (clm / prefix_lm): continue each prompt
    python experiments/generate.py --workdir=/tmp/jaxlm/clm --prompt "Return the" \
        --max_new_tokens 64 --temperature 0.8 --top_p 0.9
    # encoder-decoder (span_corruption / ul2): fill the spans; without sentinels, free generation
    python experiments/generate.py --workdir=/tmp/jaxlm/span \
        --prompt "Return the <extra_id_0> of the <extra_id_1>."
    # encoder (mlm): the top-k candidates at each [MASK]
    python experiments/generate.py --workdir=/tmp/jaxlm/mlm --prompt "Return the [MASK]ist." \
        --top_k 3
    # a Hugging Face GPT-2 / T5 / BERT folder (config.json, weights, tokenizer files)
    python experiments/generate.py --hf_path=/path/to/gpt2 --prompt "Hello" --top_k 40 \
        --temperature 0.7

The mode follows the model family (and, for UL2, the objective: its mode token [NLU] is put before
span-filling inputs and [S2S] before free-generation inputs unless the prompt starts with one).
Greedy by default (--temperature 0). Runs on whatever device jax finds; a tiny model takes a few
seconds, most of it compilation. Expected output (tiny models of the default comparison run, byte
vocabulary; the continuation is after the `|`):

    /tmp/jaxlm/clm step 2000: decoder (1.2M params), objective clm: continue
    [0] Return the| value of the function is called with the
    /tmp/jaxlm/span step 2000: encoder_decoder (2.1M params), objective span_corruption: fill spans
    [0] Return the value of the file.
        <extra_id_0> = 'value'  <extra_id_1> = 'file'
        raw output: '<extra_id_0>value<extra_id_1>file'

Errors (no workdir, no checkpoint, a model that cannot do what the prompt asks) are one line on
stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

# Runnable as `python experiments/generate.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxlm import cli, generate, io  # noqa: E402
from jaxlm import config as config_lib  # noqa: E402
from jaxlm.data.sentencepiece_vocab import SentencePieceVocabulary  # noqa: E402
from jaxlm.data.tokenizer import ByteVocabulary, MODE_TOKENS  # noqa: E402
from jaxlm.checkpoint import load_pretrained  # noqa: E402
from jaxlm.models import build_model, param_count  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                epilog=cli.run_config_epilog(config_lib.get_config()))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a run directory written by experiments/pretrain.py")
    source.add_argument("--hf_path", help="a Hugging Face checkpoint folder (GPT-2, BERT, T5)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--prompt", action="append", required=True,
                        help="repeatable; all prompts are decoded as one batch")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=None,
                        help="sampling: keep the k most likely tokens; mlm: candidates shown")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", default=None,
                        help="override the vocabulary: byte or path/to/x.model")
    return parser.parse_args(argv)


def load_vocab(spec: str, vocab_size: int | None = None, data: dict | None = None):
    """A vocabulary from the run config's data section (or an explicit spec)."""
    if spec == "byte":
        return ByteVocabulary()
    if spec.endswith(".model"):
        return SentencePieceVocabulary.load(spec, vocab_size=vocab_size)
    from jaxlm.data.pipeline import DataConfig, make_vocabulary  # TensorFlow: only when needed

    known = {k: v for k, v in (data or {}).items() if k in DataConfig.__dataclass_fields__}
    return make_vocabulary(DataConfig(**known))


def _latest_step(workdir: str) -> int:
    # Orbax names each step's folder by its number.
    return max(int(d) for d in io.listdir(io.join(workdir, "checkpoints")) if d.isdigit())


def load_workdir(args: argparse.Namespace):
    """(ModelConfig, params, vocab, objective, description) of a trainer's run directory."""
    if not io.isdir(args.workdir):
        raise FileNotFoundError(f"workdir {args.workdir!r} does not exist.")
    config_path = io.join(args.workdir, "config.json")
    if not io.exists(config_path):
        raise FileNotFoundError(f"{config_path} is missing: is {args.workdir!r} a run directory?")
    run = json.loads(io.read_text(config_path))
    cfg, params = load_pretrained(args.workdir, step=args.step)
    step = args.step if args.step is not None else _latest_step(args.workdir)
    data = run.get("data", {})
    vocab = load_vocab(args.vocab or data.get("vocab", "byte"), data.get("vocab_size"), data)
    return cfg, params, vocab, run.get("objective"), f"{args.workdir} step {step}"


class HFVocab:
    """The few Vocabulary members generation uses, over a transformers tokenizer (GPT-2, BERT)."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(path)
        self.eos_id = self._tok.eos_token_id if self._tok.eos_token_id is not None else \
            self._tok.sep_token_id
        self.pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else -1
        self.mask_id = self._tok.mask_token_id
        self.bos_id = self._tok.bos_token_id
        self.sentinel_ids = ()
        # BERT's encoder input is [CLS] text [SEP].
        cls, sep = self._tok.cls_token_id, self._tok.sep_token_id
        self.wrap = (lambda ids: [cls, *ids, sep]) if cls is not None else (lambda ids: ids)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def sentinel_id(self, i: int) -> int:
        raise ValueError("This tokenizer has no <extra_id_N> sentinels.")


def load_hf(args: argparse.Namespace):
    from jaxlm.hf import from_hf

    model, params = from_hf(args.hf_path)
    spiece = io.join(args.hf_path, "spiece.model")
    if args.vocab:
        vocab = load_vocab(args.vocab, model.cfg.vocab_size)
    elif io.exists(spiece):  # T5: <extra_id_0> at the top of its 32100 ids
        vocab = SentencePieceVocabulary.load(spiece, vocab_size=model.cfg.vocab_size,
                                             t5_sentinels=True)
    else:
        vocab = HFVocab(args.hf_path)
    return model.cfg, params, vocab, None, args.hf_path


def _mode_prefix(vocab, objective: str | None, prompt: str, mode: str) -> list[int]:
    """UL2 models read a mode token first; other models nothing."""
    if objective != "ul2" or prompt.lstrip().startswith(tuple(MODE_TOKENS.values())):
        return []
    return [vocab.mode_ids[mode]]


def run(args: argparse.Namespace) -> None:
    cfg, params, vocab, objective, where = load_workdir(args) if args.workdir else load_hf(args)
    model = build_model(cfg.replace(dropout_rate=0.0, attention_dropout_rate=0.0))
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    seed=args.seed)
    has_sentinel = [re.search(r"<extra_id_\d+>", p) is not None for p in args.prompt]
    mode = {"decoder": "continue", "encoder": "fill masks",
            "encoder_decoder": "fill spans" if all(has_sentinel) else "generate"}[cfg.family]
    print(f"{where}: {cfg.family} ({param_count(params) / 1e6:.1f}M params), "
          f"objective {objective or 'unknown'}: {mode}")

    if cfg.family == "decoder":
        bos = getattr(vocab, "bos_id", generate.PAD_ID)
        prompts = [generate.encode_text(vocab, p) for p in args.prompt]
        out = generate.sample(model, params, prompts, max_new_tokens=args.max_new_tokens,
                              eos_id=vocab.eos_id, bos_id=bos, **sampling)
        for i, (p, tokens, n) in enumerate(zip(args.prompt, out.tokens, out.lengths)):
            print(f"[{i}] {p}|{vocab.decode(tokens[:n])}")
    elif cfg.family == "encoder":
        rows = []
        for p in args.prompt:
            if "[MASK]" not in p:
                raise ValueError(f"An MLM encoder fills [MASK] markers; the prompt {p!r} has none.")
            ids = generate.encode_text(vocab, p)
            rows.append(vocab.wrap(ids) if hasattr(vocab, "wrap") else ids)
        fills = generate.fill_masks(model, params, rows, mask_id=vocab.mask_id,
                                    top_k=args.top_k or 1)
        for i, fill in enumerate(fills):
            print(f"[{i}] {vocab.decode(fill.filled)}")
            for pos, ids, probs in zip(fill.positions, fill.ids, fill.probs):
                cands = "  ".join(f"{vocab.decode([t])!r} {p:.2f}" for t, p in zip(ids, probs))
                print(f"    [MASK]@{pos}: {cands}")
    elif mode == "fill spans":
        for i, p in enumerate(args.prompt):  # one at a time: each may carry its own mode token
            fill = generate.fill_spans(model, params, p, vocab, max_new_tokens=args.max_new_tokens,
                                       prefix_ids=_mode_prefix(vocab, objective, p, "nlu"),
                                       **sampling)
            print(f"[{i}] {fill.text}")
            spans = "  ".join(f"<extra_id_{k}> = {v!r}" for k, v in fill.spans.items())
            print(f"    {spans or '(the model produced no sentinel)'}")
            print(f"    raw output: {fill.output!r}")
    else:
        inputs = [_mode_prefix(vocab, objective, p, "s2s") + generate.encode_text(vocab, p)
                  + [vocab.eos_id] for p in args.prompt]
        out = generate.generate_encoder_decoder(model, params, inputs,
                                                max_new_tokens=args.max_new_tokens,
                                                eos_id=vocab.eos_id, **sampling)
        for i, (p, tokens, n) in enumerate(zip(args.prompt, out.tokens, out.lengths)):
            print(f"[{i}] {p} -> {vocab.decode(tokens[:n])}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
