"""The comparison's evaluation: held-out documents and the same three measurements for every model.

    pretraining_corpus(directory)              # the stdlib corpus minus the held-out documents
    suite = build_suite(vocab, config.evaluation)  # tokens, labels, probe split, subsets, pairs
    scores = evaluate(cfg, params, suite, config.evaluation, objective="mlm")
    scores["probe_16"], scores["probe_64"]     # [subsets, test] 1 / 0: frozen-feature probes
    scores["finetune"]                         # [subsets, test] 1 / 0: whole model fine-tuned
    scores["zero_shot"]                        # [pairs] 1 / 0.5 / 0: minimal pairs

Held out: every document of the `stdlib_modules` classes (`tasks.STDLIB_CLASSES`, 4,063 documents,
0.7 MB on Python 3.11) is evaluation text, and pretraining reads the rest of the corpus (7,316
documents, 1.8 MB), written once as a jsonl file (`pretraining_corpus`) and read through the
`text_files` builder. So no text that is probed, fine-tuned on, tested or turned into a minimal
pair was ever read in pretraining, for any arm.

Measurements, each a correctness matrix that is paired across models (same examples, same
subsets), so `jaxlm.evaluation.stats.paired_bootstrap` compares any two models:
  * probe (`jaxlm.evaluation.probe`): mean-pooled final hidden states, 128 documents per class as
    the training pool and the rest (2,783) as the test set; for k in `probe_ks`, `probe_subsets`
    subsets of k per class, one logistic regression each.
  * low-data fine-tuning (`jaxlm.finetune.finetune`): the whole model with a fresh head,
    `finetune_subsets` subsets of `finetune_k` per class from the same pool, fixed steps, scored
    on the same test set.
  * zero-shot minimal pairs (`jaxlm.evaluation.pairs`) from the held-out texts. The encoder's
    pseudo-log-likelihood is summed over the tokens where the two sentences differ (each masked
    in turn), the counterpart of the encoder-decoder's span-infilling score: a full PLL costs one
    forward pass per token of both sentences, ~10x more, and the shared tokens carry little of
    the difference.
Rows are trimmed to the longest tokenized example (at most `seq_len`), and features are computed in
two length buckets, so short texts cost less.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxlm import io, sharding
from jaxlm.data.tasks import STDLIB_CLASSES, Task, TaskSplit, encode_texts
from jaxlm.data.tokenizer import Vocabulary
from jaxlm.evaluation import pairs as pairs_lib
from jaxlm.evaluation import probe as probe_lib
from jaxlm.models import ModelConfig, build_model, dummy_batch

HELDOUT_TASK = "stdlib_modules"


def get_config() -> ml_collections.ConfigDict:
    """The `evaluation` section of the comparison config."""
    return ml_collections.ConfigDict(dict(
        seq_len=64,  # evaluation rows: text, EOS, pad (the start of a document names its module)
        pool_per_class=128,  # probe / fine-tuning training pool; every other document tests
        probe_ks="16,64",  # comma-separated k (examples per class) of the frozen-feature probes
        probe_subsets=10,  # resampled training subsets per k
        probe_k=16,  # the k reported in results.csv's probe_* columns
        finetune_k=64,  # low-data fine-tuning: examples per class
        finetune_subsets=3,
        finetune_steps=30, finetune_batch_size=32, finetune_learning_rate=1e-3,
        finetune_dropout=0.1,
        pairs=1000,  # zero-shot minimal pairs
        pairs_max_words=24,  # shorter sentences: fewer tokens to score
        batch_size=128,  # forward-pass batch of features and pair scoring
        bootstrap_resamples=4000,  # per interval of the report: its 2.5% / 97.5% quantiles are
        # stable to ~0.1 point at 4000
        seed=0))  # the probe split, subsets and pairs (the same for every model)


def ks(e: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The probe's k values, in order."""
    return tuple(int(k) for k in str(e.probe_ks).split(",") if k.strip())


# --------------------------------------------------------------------------------------------------
# Documents


def split_documents(documents: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(pretraining, held out): a document is held out when its module is a task class."""
    held = [d for d in documents if d.module in STDLIB_CLASSES]
    return [d for d in documents if d.module not in STDLIB_CLASSES], held


@functools.lru_cache(maxsize=1)
def stdlib_documents() -> tuple[Any, ...]:
    """The default corpus's documents (parsed once per process: ~4 s)."""
    from jaxlm.data import corpus

    return tuple(corpus.stdlib_documents(include_comments=True)[0])


def pretraining_corpus(directory: str) -> str:
    """The pretraining text as `directory/pretraining_<hash>.jsonl` (written once; the hash is
    of its content, so another Python version gets another file); returns its path."""
    texts = [d.text for d in split_documents(stdlib_documents())[0]]
    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    digest = hashlib.sha256(lines.encode()).hexdigest()[:12]
    path = io.join(directory, f"pretraining_{digest}.jsonl")
    if not io.exists(path):
        io.write_text(path, lines)  # atomic
    return path


def pretraining_dataset(data: ml_collections.ConfigDict, workdir: str) -> tuple[str, str | None]:
    """(data.dataset, data.data_dir) the arms pretrain on; `stdlib_heldout` is prepared here as
    a text_files dataset in data_dir (default WORKDIR/data)."""
    if data.dataset != "stdlib_heldout":
        return data.dataset, data.data_dir
    from jaxlm.data.text_files import text_files_builder

    data_dir = data.data_dir or io.join(workdir, "data")
    path = pretraining_corpus(io.join(data_dir, "stdlib_heldout"))
    name = os.path.splitext(os.path.basename(path))[0]
    text_files_builder(path, data_dir=data_dir, name=name)
    return f"text_files/{name}", data_dir


# --------------------------------------------------------------------------------------------------
# The suite: what every model is scored on


@dataclasses.dataclass(frozen=True)
class Suite:
    """Held-out labelled examples, their probe split and subsets, and the minimal pairs."""

    label_names: tuple[str, ...]
    tokens: np.ndarray  # [N, L] EOS-terminated, 0-padded
    labels: np.ndarray  # [N]
    pool: np.ndarray  # indices of the training pool
    test: np.ndarray  # indices of the test set
    finetune_subsets: np.ndarray  # [subsets, k * classes] indices into the pool
    pairs: pairs_lib.MinimalPairs

    def summary(self) -> str:
        return (f"evaluation: {len(self.labels)} held-out documents of {len(self.label_names)} "
                f"classes ({len(self.pool)} pool / {len(self.test)} test, rows of "
                f"{self.tokens.shape[1]} tokens), {len(self.pairs)} minimal pairs")


def _trim(tokens: np.ndarray) -> np.ndarray:
    """Drops the all-pad columns at the end (at least one column stays)."""
    used = np.flatnonzero(tokens.any(0))
    return tokens[:, :max(int(used[-1]) + 1 if used.size else 1, 1)]


def build_suite(vocab: Vocabulary, e: ml_collections.ConfigDict,
                documents: Sequence[Any] | None = None) -> Suite:
    """The suite from the held-out documents (default: the stdlib corpus's)."""
    held = split_documents(documents if documents is not None else stdlib_documents())[1]
    index = {m: i for i, m in enumerate(STDLIB_CLASSES)}
    labels = np.array([index[d.module] for d in held], np.int32)
    tokens, _ = encode_texts(vocab, [(d.text,) for d in held], e.seq_len)
    pool, test = probe_lib.split_for_probe(labels, e.pool_per_class, seed=e.seed)
    not_pool = np.setdiff1d(np.arange(len(labels)), pool)
    subsets = probe_lib.kshot_subsets(labels, e.finetune_k, e.finetune_subsets, seed=e.seed + 1,
                                      test_indices=not_pool)
    pairs = pairs_lib.build_minimal_pairs([d.text for d in held], vocab, e.pairs, seed=e.seed,
                                          seq_len=e.seq_len, max_words=e.pairs_max_words)
    pairs = dataclasses.replace(pairs, original_tokens=_trim(pairs.original_tokens),
                                altered_tokens=_trim(pairs.altered_tokens))
    return Suite(STDLIB_CLASSES, _trim(tokens), labels, pool, test, subsets, pairs)


def subset_task(suite: Suite, rows: np.ndarray) -> Task:
    """A fine-tuning Task: train on `rows`, evaluate on the suite's test set."""
    def split(idx: np.ndarray) -> TaskSplit:
        return TaskSplit(suite.tokens[idx], suite.labels[idx], tuple(str(i) for i in idx))

    return Task(HELDOUT_TASK, suite.label_names, split(rows), split(suite.test), "heldout",
                suite.tokens.shape[1], int(suite.tokens.max()) + 1, 0.0)


# --------------------------------------------------------------------------------------------------
# Scoring one model


def random_params(cfg: ModelConfig, seed: int) -> Any:
    """A random initialisation of `cfg` (the no-pretraining baseline), unboxed."""
    model = build_model(cfg)
    boxed = jax.jit(lambda: model.init(jax.random.key(seed), dummy_batch(cfg, 1, 8)))()
    return sharding.unbox_values(boxed["params"])


def features(model: Any, params: Any, family: str, tokens: np.ndarray,
             batch_size: int) -> np.ndarray:
    """`probe.features` in two length buckets: rows that fit in half the width run at half the
    width (on the stdlib suite, most documents are shorter than 32 tokens)."""
    lengths = (tokens != 0).sum(1)
    half = tokens.shape[1] // 2
    x = None
    for rows, width in ((np.flatnonzero(lengths <= half), half),
                        (np.flatnonzero(lengths > half), tokens.shape[1])):
        if rows.size == 0:
            continue
        part = probe_lib.features(model, params, family, tokens[rows, :width], batch_size)
        if x is None:
            x = np.zeros((len(tokens), part.shape[1]), np.float32)
        x[rows] = part
    return x


def differing_positions(original: np.ndarray, altered: np.ndarray,
                        sentinel_id: int) -> tuple[np.ndarray, np.ndarray]:
    """([P, L], [P, L]) bool: each side's tokens between the pair's common prefix and suffix
    (`pairs.infilling_examples` finds them; `sentinel_id` is any id the texts never hold)."""
    inputs, target_a, target_b = pairs_lib.infilling_examples(original, altered, sentinel_id)
    start = np.argmax(inputs == sentinel_id, axis=1)[:, None]
    cols = np.arange(original.shape[1])[None]
    # A target is `sentinel region EOS`: the region is 2 tokens shorter than the target.
    return tuple((cols >= start) & (cols < start + (t != 0).sum(1, keepdims=True) - 2)
                 for t in (target_a, target_b))


def _encoder_region_scores(model: Any, params: Any, pairs: pairs_lib.MinimalPairs,
                           vocab: Vocabulary, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each side's masked log-likelihood of the tokens where the pair differs (module doc)."""
    masks = differing_positions(pairs.original_tokens, pairs.altered_tokens,
                                vocab.sentinel_id(0))
    a, b = (pairs_lib.score_encoder(model, params, tokens, vocab.mask_id, batch_size,
                                    scored=mask)
            for tokens, mask in zip((pairs.original_tokens, pairs.altered_tokens), masks))
    return a, b


def zero_shot(model: Any, params: Any, family: str, suite: Suite, vocab: Vocabulary,
              objective: str, batch_size: int) -> np.ndarray:
    """[pairs] minimal-pair correctness of one model (1, 0.5 on a tie, 0)."""
    if family == "encoder":
        a, b = _encoder_region_scores(model, params, suite.pairs, vocab, batch_size)
    else:  # UL2 models read the R-denoiser's mode token first, as in pretraining
        prefix = [vocab.mode_ids["nlu"]] if objective == "ul2" else []
        a, b = pairs_lib.score_pairs(model, params, family, suite.pairs, vocab, batch_size,
                                     prefix_ids=prefix)
    return pairs_lib.pair_accuracy(a, b)


def evaluate(cfg: ModelConfig, params: Any, suite: Suite, e: ml_collections.ConfigDict,
             vocab: Vocabulary, *, objective: str, seed: int,
             say: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """Every measurement of one model (the module docstring's keys)."""
    from jaxlm.finetune import finetune

    model = build_model(cfg)
    # One device: a jitted forward over replicated params would run on every device at once.
    local = jax.device_put(params, jax.devices()[0])
    scores: dict[str, np.ndarray] = {}
    x = features(model, local, cfg.family, suite.tokens, e.batch_size)
    probes = probe_lib.probe_accuracy(x, suite.labels, suite.pool, suite.test, ks=ks(e),
                                      num_subsets=e.probe_subsets, seed=e.seed)
    for k, correct in probes.items():
        scores[f"probe_{k}"] = correct
    scores["zero_shot"] = zero_shot(model, local, cfg.family, suite, vocab, objective,
                                    e.batch_size)
    rows = []
    for s, subset in enumerate(suite.finetune_subsets):
        result = finetune(cfg, params, subset_task(suite, subset), steps=e.finetune_steps,
                          batch_size=e.finetune_batch_size,
                          learning_rate=e.finetune_learning_rate, seed=seed * 1000 + s,
                          eval_every=e.finetune_steps, dropout=e.finetune_dropout, log=None)
        rows.append(result.eval_correct)
    scores["finetune"] = np.asarray(rows, np.float64)
    say("  " + ", ".join(f"{k} {v.mean():.3f}" for k, v in scores.items()))
    return scores
