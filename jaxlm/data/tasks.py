"""Downstream classification tasks for fine-tuning: the offline default and GLUE-style TFDS tasks.

    task = load_task("stdlib_modules", vocab=ByteVocabulary(), seq_len=128)
    task.train.tokens   # [N, 128] int32: text ids truncated to seq_len - 1, then EOS, pad 0
    task.train.labels   # [N] int32 in [0, task.num_classes)
    task.majority_accuracy  # accuracy of always predicting the eval split's most frequent class

`stdlib_modules` (offline, the default): which top-level standard-library module a docstring,
prose comment block or pydoc topic of the default pretraining corpus (`jaxlm.data.corpus`,
`stdlib_documents()`) comes from. The classes are the ten modules with the most documents on
Python 3.11, fixed in `STDLIB_CLASSES` so they do not drift with the interpreter:
asyncio, email, importlib, multiprocessing, _pydecimal, xml, logging, http, unittest, urllib.
On Python 3.11: 3,860 train and 203 eval examples; the most frequent class is 15.5% of train and
19.2% of eval (asyncio), so the majority baseline is 0.192.

Leakage: the pretraining corpus's train split contains the texts of this task's train examples
(unlabeled). The eval examples are exactly the corpus's *validation* documents of these classes,
which pretraining never trains on, so a pretrained model has not seen an eval text, while the
no-pretraining baseline and every pretrained model see the same labeled train set. Documents are
split by the corpus's own key hash (`corpus.split_of`), so train and eval are disjoint, stable
across runs and independent of each other's contents. There is no separate test split (the
validation part of the corpus is only 5%): fine-tuning reports the final accuracy at a fixed budget
rather than the best one, so the eval split never selects anything and serves as a test set.

TFDS tasks (`glue/sst2`, `glue/cola`, `glue/mnli`, `glue/qnli`, `glue/qqp`, `glue/rte`,
`glue/mrpc`, `glue/wnli`, or another TFDS dataset with a ClassLabel `label` and text features)
are read from `data_dir` when prepared there; nothing is ever downloaded here. A sentence pair is
`ids(a) EOS ids(b) EOS`: EOS is the boundary token every jaxlm vocabulary has and that pretraining
puts between documents, and the longer part is truncated first so both parts survive. Train on
`train`, evaluate on `validation` (`validation_matched` for MNLI): GLUE's test labels are hidden.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlm import io as jaxlm_io
from jaxlm.conventions import EOS_ID, PAD_ID
from jaxlm.data import corpus
from jaxlm.data.tokenizer import Vocabulary, get_vocabulary

DEFAULT_TASK = "stdlib_modules"
# The ten top-level modules with the most documents in the default corpus on Python 3.11, most
# frequent first; written out so the label set is the same on every interpreter version.
STDLIB_CLASSES = ("asyncio", "email", "importlib", "multiprocessing", "_pydecimal", "xml",
                  "logging", "http", "unittest", "urllib")
MIN_TRAIN_PER_CLASS = 20  # a class with fewer is an interpreter whose stdlib differs too much

# GLUE classification configs: (text features in order, eval split). STS-B is a regression.
GLUE = {
    "cola": (("sentence",), "validation"),
    "sst2": (("sentence",), "validation"),
    "mrpc": (("sentence1", "sentence2"), "validation"),
    "qqp": (("question1", "question2"), "validation"),
    "mnli": (("premise", "hypothesis"), "validation_matched"),
    "qnli": (("question", "sentence"), "validation"),
    "rte": (("sentence1", "sentence2"), "validation"),
    "wnli": (("sentence1", "sentence2"), "validation"),
}
TASKS = (DEFAULT_TASK, *(f"glue/{c}" for c in GLUE), "<tfds name with a ClassLabel 'label'>")


class TaskNotPreparedError(ValueError):
    """A TFDS task's data is not in data_dir (nothing is downloaded here)."""


@dataclasses.dataclass(frozen=True)
class TaskSplit:
    """One split: tokens [N, seq_len] int32 (EOS-terminated, pad 0), labels [N] int32, and the
    source keys (document keys, or `split:idx` for TFDS) for tracing examples back."""

    tokens: np.ndarray
    labels: np.ndarray
    keys: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Task:
    """A tokenized classification task: a train split and a held-out eval split."""

    name: str
    label_names: tuple[str, ...]
    train: TaskSplit
    eval: TaskSplit
    eval_split: str  # where the eval examples come from ('validation', 'validation_matched')
    seq_len: int
    vocab_size: int  # of the vocabulary that tokenized it; the model's must be at least this
    truncated_fraction: float  # share of all examples longer than seq_len (cut at the end)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def majority_accuracy(self) -> float:
        """Accuracy of the best constant prediction on the eval split (the baseline to beat)."""
        counts = np.bincount(self.eval.labels, minlength=self.num_classes)
        return float(counts.max() / max(len(self.eval), 1))

    def summary(self) -> str:
        counts = np.bincount(self.train.labels, minlength=self.num_classes)
        return (f"{self.name}: {self.num_classes} classes, {len(self.train)} train / "
                f"{len(self.eval)} {self.eval_split} examples of {self.seq_len} tokens "
                f"({100 * self.truncated_fraction:.0f}% truncated); largest train class "
                f"{counts.max() / max(len(self.train), 1):.1%}; eval majority baseline "
                f"{self.majority_accuracy:.3f}")


def load_task(name: str = DEFAULT_TASK, *, vocab: Vocabulary | str, seq_len: int,
              data_dir: str | None = None, eval_split: str | None = None) -> Task:
    """The task `name`, tokenized with `vocab` (a Vocabulary, 'byte' or a `.model` path).

    `data_dir`: the TFDS data_dir for TFDS tasks (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    `eval_split`: override the TFDS eval split (e.g. 'validation_mismatched' for MNLI).
    """
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len={seq_len!r} is invalid: expected an int >= 2 (text + EOS).")
    if isinstance(vocab, (str, os.PathLike)):
        vocab = get_vocabulary(os.fspath(vocab))
    if name == DEFAULT_TASK:
        if eval_split not in (None, corpus.VALIDATION):
            raise ValueError(f"{name} has one held-out split, 'validation'; got {eval_split!r}.")
        return _stdlib_modules(vocab, seq_len)
    if "/" not in name and name not in _known_tfds_names():
        raise ValueError(f"Unknown task {name!r}: expected one of {', '.join(TASKS)}.")
    return _tfds_task(name, vocab, seq_len, data_dir, eval_split)


# --------------------------------------------------------------------------------------------------
# The offline default


@functools.lru_cache(maxsize=2)
def _stdlib_docs() -> tuple[corpus.Document, ...]:
    # ~4 s to parse the stdlib; the objective comparison loads the task once per model.
    docs, _ = corpus.stdlib_documents(include_comments=True)
    return tuple(docs)


def _stdlib_modules(vocab: Vocabulary, seq_len: int) -> Task:
    index = {m: i for i, m in enumerate(STDLIB_CLASSES)}
    parts: dict[str, tuple[list[str], list[int], list[str]]] = {
        corpus.TRAIN: ([], [], []), corpus.VALIDATION: ([], [], [])}
    for doc in _stdlib_docs():  # key order: deterministic
        if doc.module in index:
            texts, labels, keys = parts[corpus.split_of(doc.key)]
            texts.append(doc.text)
            labels.append(index[doc.module])
            keys.append(doc.key)
    train_counts = collections.Counter(parts[corpus.TRAIN][1])
    thin = [m for m, i in index.items() if train_counts[i] < MIN_TRAIN_PER_CLASS]
    if thin:
        raise ValueError(f"{DEFAULT_TASK}: this Python's standard library has fewer than "
                         f"{MIN_TRAIN_PER_CLASS} documents of {thin}; the task needs "
                         "Python 3.10-3.13.")
    splits, truncated = {}, 0
    for split, (texts, labels, keys) in parts.items():
        tokens, cut = encode_texts(vocab, [(t,) for t in texts], seq_len)
        splits[split] = TaskSplit(tokens, np.asarray(labels, np.int32), tuple(keys))
        truncated += cut
    total = sum(len(s) for s in splits.values())
    return Task(DEFAULT_TASK, STDLIB_CLASSES, splits[corpus.TRAIN], splits[corpus.VALIDATION],
                corpus.VALIDATION, seq_len, vocab.vocab_size, truncated / max(total, 1))


# --------------------------------------------------------------------------------------------------
# Tokenization


def encode_texts(vocab: Vocabulary, examples: Sequence[Sequence[str]],
                 seq_len: int) -> tuple[np.ndarray, int]:
    """[N, seq_len] int32 rows `ids(part) EOS` per part, pad 0; and how many rows were cut.

    A row longer than seq_len keeps the start of each part (the summary line of a docstring) and
    is cut from its longest part first (BERT's pair truncation), so every part keeps some tokens.
    """
    flat = vocab.encode_batch([text for e in examples for text in e])
    out = np.full((len(examples), seq_len), PAD_ID, np.int32)
    cut, offset = 0, 0
    for row, example in enumerate(examples):
        parts = flat[offset:offset + len(example)]
        offset += len(example)
        budget = seq_len - len(parts)  # one EOS per part
        if budget < len(parts):
            raise ValueError(f"seq_len={seq_len} leaves no room for {len(parts)} text parts.")
        lengths = _fit([len(p) for p in parts], budget)
        cut += lengths != [len(p) for p in parts]
        ids = [i for p, n in zip(parts, lengths) for i in (*p[:n], EOS_ID)]
        out[row, :len(ids)] = ids
    if out.size and out.max() >= vocab.vocab_size:  # a vocabulary bug, not a user error
        raise RuntimeError(f"token id {out.max()} >= vocab_size {vocab.vocab_size}")
    return out, cut


def _fit(lengths: list[int], budget: int) -> list[int]:
    """Part lengths with sum <= budget, shortening the longest parts first (equalising them)."""
    if sum(lengths) <= budget:
        return lengths
    lo, hi = 0, max(lengths)  # the largest cap c with sum(min(l, c)) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if sum(min(n, mid) for n in lengths) <= budget else (lo, mid - 1)
    fitted = [min(n, lo) for n in lengths]
    spare = budget - sum(fitted)
    for i, n in enumerate(lengths):  # leftovers (< number of parts) to the earlier cut parts
        if spare and fitted[i] < n:
            fitted[i] += 1
            spare -= 1
    return fitted


# --------------------------------------------------------------------------------------------------
# TFDS tasks (GLUE and friends)


@functools.lru_cache(maxsize=1)
def _known_tfds_names() -> frozenset[str]:
    import tensorflow_datasets as tfds

    return frozenset(tfds.list_builders(with_community_datasets=False))


def _tfds_task(name: str, vocab: Vocabulary, seq_len: int, data_dir: str | None,
               eval_split: str | None) -> Task:
    import tensorflow_datasets as tfds

    # A gs:// data_dir reaches TFDS unchanged.
    data_dir = jaxlm_io.join(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
    dataset, _, config = name.partition("/")
    if dataset == "glue" and config == "stsb":
        raise ValueError("glue/stsb is a regression task; fine-tuning here is classification.")
    if dataset == "glue" and config not in GLUE:
        raise ValueError(f"Unknown task {name!r}: GLUE tasks are "
                         + ", ".join(f"glue/{c}" for c in GLUE) + ".")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for unknown names / configs
        raise ValueError(f"Unknown task {name!r} ({type(error).__name__}: {error}).") from None
    features = builder.info.features
    label = features["label"] if "label" in features else None
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(f"{name} has no ClassLabel feature 'label': not a classification task.")
    default_fields, default_eval = GLUE.get(config, (None, "validation")) if dataset == "glue" \
        else (None, "validation")
    fields = default_fields or tuple(sorted(k for k, f in features.items()
                                            if isinstance(f, tfds.features.Text)))
    if not fields:
        raise ValueError(f"{name} has no text features.")
    eval_split = eval_split or default_eval
    splits = {}
    truncated = 0
    for split in ("train", eval_split):
        texts, labels, keys = _read_split(builder, name, split, fields, data_dir)
        tokens, cut = encode_texts(vocab, texts, seq_len)
        splits[split] = TaskSplit(tokens, labels, keys)
        truncated += cut
    total = sum(len(s) for s in splits.values())
    return Task(name, tuple(label.names), splits["train"], splits[eval_split], eval_split, seq_len,
                vocab.vocab_size, truncated / max(total, 1))


def _read_split(builder: Any, name: str, split: str, fields: tuple[str, ...],
                data_dir: str) -> tuple[list[tuple[str, ...]], np.ndarray, tuple[str, ...]]:
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:  # tfds's "could not find data in ..."
        raise TaskNotPreparedError(
            f"{name} is not prepared in {data_dir}; nothing is downloaded here. Prepare it once "
            f"with network access: python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\" "
            f"(or `tfds build {name} --data_dir={data_dir}`), or pass --data_dir where it is."
        ) from None
    except ValueError as error:  # unknown split
        raise ValueError(f"{name} has no split {split!r} ({error}).") from None
    texts, labels, keys = [], [], []
    for i, ex in enumerate(ds.as_numpy_iterator()):
        texts.append(tuple(ex[f].decode("utf-8", errors="replace") for f in fields))
        labels.append(int(ex["label"]))
        keys.append(f"{split}:{int(ex['idx']) if 'idx' in ex else i}")
    labels_np = np.asarray(labels, np.int32)
    if len(labels_np) == 0 or labels_np.min() < 0:
        raise ValueError(f"{name} split {split!r} has no labels (GLUE's test labels are hidden); "
                         "evaluate on a validation split.")
    return texts, labels_np, tuple(keys)
