"""The input pipeline: TFDS -> per-host split -> shuffle -> tokenize -> pack -> objective -> batch.

    pipe = Pipeline(DataConfig(dataset="stdlib_docs", data_dir=..., seq_len=512),
                    objective="span_corruption", family="encoder_decoder", global_batch_size=64)
    it = pipe.iterator()                 # BatchIterator: numpy batches [local_batch, length]
    batch = to_global_arrays(next(it), mesh)
    state = it.get_state()               # small JSON-able dict; it.set_state(state) resumes exactly
    for batch in pipe.eval_batches(num_batches=20): ...

Stages (all inside tf.data; host-local, deterministic):
1. Records of `data.dataset` from `data_dir` (the offline `stdlib_docs` corpus is prepared on first
   use; anything else must have been prepared, else a ValueError says how), the split divided
   evenly between processes (`tfds.split_for_jax_process`: disjoint parts that cover it).
2. Shuffle: block shuffle of `shuffle_buffer` documents with `stateless_shuffle`, keyed by (seed,
   epoch, block), so the order depends on nothing but the seed (not on TF's global seed) and differs
   per epoch. TFDS shuffles examples when it prepares a dataset, so a local shuffle is enough; files
   are read in order (`shuffle_files=False`), which is what makes positions reproducible.
3. Windows of `window` documents: whitespace-only documents are skipped (counted in
   `BatchIterator.stats`), the rest tokenized in one call (`vocab.tf_tokenize_batch`: the byte
   vocabulary keeps undecodable bytes as they are, SentencePiece decodes them to U+FFFD) and EOS
   appended per document (see packing.py for when).
4. Packing and objective: 'concat' cuts the token stream into chunks of the objective's raw length
   (a `scan` carries the remainder from window to window, so no token is lost), and the objective
   runs once per batch of chunks; 'greedy' / 'none' run the objective on each document piece and
   pack one window at a time (first-fit, with segment ids and positions). Either way one
   `numpy_function` call handles a whole window or batch: the numpy objectives of
   jaxlm/objectives.py, bit-identical to `tf_objective_fn` for the same seed, with the per-example
   seeds of `packing.mix_seeds`. Lengths per objective: the table in packing.py.
5. Batch of global_batch // process_count rows (padding-free for concat CLM and span corruption),
   prefetch.

Resumption: every row carries where its tokens end in the document stream: (epoch, document,
offset) for concat, (epoch, window, row) for greedy / none. `get_state()` returns that position of
the last batch returned; `set_state()` rebuilds the pipeline from it: skip whole windows of raw
records (read and shuffled, not tokenized), re-tokenize the one window the position is in, and drop
what was consumed of it. So a restore costs reading the records up to the position (roughly
reading-speed of the files, no tokenization or objective work) plus one window, and gives exactly
the batches of the uninterrupted run: seeds and packing depend only on positions, never on how many
batches were drawn. The state is per process and refuses a pipeline that differs (fingerprint).

Eval (`eval_batches`): the eval split, unshuffled, one pass, the objective seeded by a fixed eval
seed (the same examples for every run), the concat remainder emitted as a last short chunk, and the
last batch padded with all-zero rows (loss weights 0). Give `num_batches` on multi-host runs: every
process then yields exactly that many batches (all-zero ones once its part is exhausted).
"""

from __future__ import annotations

import atexit
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxlm.data import packing as packing_lib
from jaxlm.data.tokenizer import ByteVocabulary, Vocabulary, get_vocabulary, import_tf

logger = logging.getLogger(__name__)

DEFAULT_CORPUS = "stdlib_docs"
EVAL_SEED = 0
_NO_END = 2**62  # epochs of an endless dataset


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The run config's `data` section."""

    dataset: str = DEFAULT_CORPUS  # TFDS name[/config][:version]: stdlib_docs, lm1b, c4/en:3.0.1
    data_dir: str | None = None  # TFDS data_dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets
    text_feature: str = "text"  # the string feature holding the document text
    train_split: str = "train"
    eval_split: str = "validation"
    seq_len: int = 512  # encoder / decoder-only length (decoder length per objective: packing.py)
    vocab: str = "byte"  # byte | sentencepiece (trained on train_split, cached) | path/to/x.model
    vocab_size: int | None = None  # sentencepiece: required (multiple of 128); byte: None or 384
    shuffle_buffer: int = 10_000  # documents per shuffle block; <= 1: no shuffle
    packing: str = "auto"  # auto (per objective, packing.py) | concat | greedy | none
    seed: int = 0  # shuffle order and objective randomness
    window: int = 512  # documents per tokenize / pack window (also the resume granularity)
    # Input shards: disjoint parts of the stream, each read by process_count / shards processes
    # that keep their own rows of its batches. 1: every process reads the whole stream, so runs
    # on any number of processes see identical batches; -1: one per process (disjoint reading,
    # what a pod needs). Must divide the process count.
    shards: int = 1

    @classmethod
    def coerce(cls, config: DataConfig | Mapping[str, Any] | Any) -> DataConfig:
        """A DataConfig from itself, a dict or an ml_collections ConfigDict section."""
        if isinstance(config, cls):
            return config
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(f"data.{unknown[0]} is not a data option; valid: {sorted(fields)}")
        return cls(**dict(config))

    def __post_init__(self) -> None:
        def bad(field: str, valid: str) -> ValueError:
            return ValueError(f"data.{field}={getattr(self, field)!r} is invalid: {valid}")

        if not isinstance(self.dataset, str) or not self.dataset:
            raise bad("dataset", "expected a TFDS dataset name")
        if not isinstance(self.seq_len, int) or self.seq_len < 8:
            raise bad("seq_len", "expected an int >= 8")
        for field in ("shuffle_buffer", "seed"):
            if not isinstance(getattr(self, field), int):
                raise bad(field, "expected an int")
        if not isinstance(self.shards, int) or not (self.shards == -1 or self.shards >= 1):
            raise bad("shards", "expected -1 (one per process) or a positive int")
        if not isinstance(self.window, int) or self.window < 1:
            raise bad("window", "expected an int >= 1")
        if self.packing not in ("auto", *packing_lib.PACKINGS):
            raise bad("packing", f"expected one of {['auto', *packing_lib.PACKINGS]}")

    @property
    def resolved_data_dir(self) -> str:
        d = self.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
        return os.path.abspath(os.path.expanduser(os.fspath(d)))


# ----------------------------------------------------------------------------------------------
# Dataset and vocabulary


def load_builder(config: DataConfig) -> Any:
    """The prepared TFDS builder of `config.dataset`, with clear errors (see the module doc)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered

    from jaxlm.data import corpus  # registers stdlib_docs and text_files

    name, data_dir = config.dataset, config.resolved_data_dir
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except registered.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        # list_imported_builders, not tfds.list_builders: the latter is slow and goes online.
        close = difflib.get_close_matches(base, registered.list_imported_builders(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"data.dataset={name!r}: unknown dataset, no TFDS builder {base!r} is registered{hint}"
        ) from None
    except (AssertionError, ValueError) as e:
        # The code cannot make that config / version (a text_files config, a version prepared by
        # another TFDS release): read it from its prepared folder if there is one.
        folder = _prepared_folder(data_dir, name)
        if folder is None:
            raise ValueError(f"data.dataset={name!r}: {e}") from None
        return tfds.builder_from_directory(folder)
    if not builder.is_prepared():
        if builder.name == DEFAULT_CORPUS:
            return corpus.prepare_default_corpus(data_dir, config=builder.builder_config.name)
        raise ValueError(
            f"data.dataset={name!r} is not prepared in data_dir={data_dir!r}. Prepare it once on "
            f"a machine with network access, `tfds build {name} --data_dir={data_dir}` or "
            f"`tfds.builder({name!r}, data_dir={data_dir!r}).download_and_prepare()`, and make "
            "that folder available here (c4 and wiki40b need Apache Beam to build)."
        )
    return builder


def _prepared_folder(data_dir: str, name: str) -> str | None:
    """data_dir/name[/config]/version (the newest version if none is named), if prepared."""
    path, _, version = name.partition(":")
    root = os.path.join(data_dir, *path.split("/"))
    if not os.path.isdir(root):
        return None
    versions = (
        [version]
        if version
        else sorted(
            (v for v in os.listdir(root) if v.replace(".", "").isdigit()),
            key=lambda v: tuple(int(x) for x in v.split(".")),
        )
    )
    for v in reversed(versions):
        if os.path.exists(os.path.join(root, v, "dataset_info.json")):
            return os.path.join(root, v)
    return None


def check_text_feature(builder: Any, feature: str) -> None:
    import tensorflow as tf

    features = builder.info.features
    if feature not in features:
        raise ValueError(
            f"data.text_feature={feature!r} is not a feature of {builder.info.full_name}; "
            f"its features are {sorted(features.keys())}"
        )
    if features[feature].tf_dtype != tf.string or features[feature].shape != ():
        raise ValueError(
            f"data.text_feature={feature!r} of {builder.info.full_name} is not a text feature "
            f"({features[feature]!r})"
        )


def make_vocabulary(config: DataConfig, builder: Any = None) -> Vocabulary:
    """The vocabulary of `config.vocab` ('sentencepiece' trains on the train split once, cached
    in data_dir/vocab: on multi-host runs train it beforehand or pass a .model path)."""
    if config.vocab == "byte":
        if config.vocab_size not in (None, ByteVocabulary().vocab_size):
            raise ValueError(f"data.vocab_size={config.vocab_size!r}: the byte vocabulary has 384")
        return ByteVocabulary()
    if config.vocab == "sentencepiece":
        if config.vocab_size is None:
            raise ValueError("data.vocab_size is required with data.vocab='sentencepiece'")
        builder = builder if builder is not None else load_builder(config)
        return get_vocabulary(
            "sentencepiece",
            dataset_name=f"{builder.info.full_name}_{config.text_feature}_{config.train_split}",
            text_iterator_factory=lambda: _iterate_texts(builder, config),
            vocab_size=config.vocab_size,
            data_dir=config.resolved_data_dir,
        )
    kwargs = {} if config.vocab_size is None else {"vocab_size": config.vocab_size}
    return get_vocabulary(config.vocab, **kwargs)


def _iterate_texts(builder: Any, config: DataConfig) -> Iterator[str]:
    ds = builder.as_dataset(split=config.train_split, shuffle_files=False)
    for text in ds.map(lambda ex: ex[config.text_feature]).as_numpy_iterator():
        yield text.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# The pipeline


class Pipeline:
    """One process's input pipeline for (data config, objective, model family, global batch).

    Everything is checked here, before any tf.data graph: objective vs family, packing, batch
    divisibility, dataset, text feature, vocabulary.
    """

    def __init__(
        self,
        config: DataConfig | Mapping[str, Any],
        *,
        objective: str,
        family: str,
        global_batch_size: int,
        objective_kwargs: Mapping[str, Any] | None = None,
        vocab: Vocabulary | None = None,
        builder: Any = None,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> None:
        self.config = config = DataConfig.coerce(config)
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        if not isinstance(global_batch_size, int) or global_batch_size < 1:
            raise ValueError(f"global batch size {global_batch_size!r} must be a positive int")
        if global_batch_size % process_count:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by the process count "
                f"{process_count}: every process loads global_batch / process_count rows"
            )
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.local_batch_size = global_batch_size // process_count
        # Objective / family / packing first: cheap, and before any vocabulary training.
        packing_lib.resolve_layout(
            objective, family, config.seq_len, ByteVocabulary(), packing=config.packing
        )
        self.builder = builder if builder is not None else load_builder(config)
        check_text_feature(self.builder, config.text_feature)
        self.vocab = vocab if vocab is not None else make_vocabulary(config, self.builder)
        self.layout = packing_lib.resolve_layout(
            objective,
            family,
            config.seq_len,
            self.vocab,
            packing=config.packing,
            objective_kwargs=objective_kwargs,
        )

    # -------------------------------------------------------------------------------- records

    def host_split(self, split: str) -> Any:
        import tensorflow_datasets as tfds

        return tfds.split_for_jax_process(
            split, process_index=self.process_index, process_count=self.process_count
        )

    def num_documents(self, split: str) -> int:
        """Documents (before skipping empty ones) of this process's part of `split`."""
        host = self.host_split(split)
        try:
            return int(self.builder.info.splits[host].num_examples)
        except (KeyError, ValueError) as e:
            available = sorted(self.builder.info.splits.keys())
            raise ValueError(
                f"split {split!r} of {self.builder.info.full_name}: {e}; splits: {available}"
            ) from None

    def documents(self, split: str) -> Any:
        """tf.data.Dataset of this process's raw document strings of `split`, in file order."""
        import tensorflow_datasets as tfds

        if self.num_documents(split) == 0:
            raise ValueError(
                f"split {split!r} of {self.builder.info.full_name} holds no document for process "
                f"{self.process_index} of {self.process_count}"
            )
        ds = self.builder.as_dataset(
            split=self.host_split(split),
            shuffle_files=False,
            read_config=tfds.ReadConfig(add_tfds_id=False),
        )
        feature = self.config.text_feature
        return ds.map(lambda ex: ex[feature])

    # -------------------------------------------------------------------------------- tf.data

    def dataset(
        self,
        split: str | None = None,
        *,
        train: bool = True,
        start: Mapping[str, Any] | None = None,
        num_epochs: int | None = None,
        with_metadata: bool = False,
    ) -> Any:
        """tf.data.Dataset of batches: dicts of int32 [local_batch, length] (see the module doc).

        train=True: `train_split` shuffled, endless unless num_epochs, full batches only.
        train=False: `eval_split` (or `split`) unshuffled, one pass, eval seed, last batch short.
        start: a position from `BatchIterator.get_state()['position']` to resume from.
        with_metadata: also yield the int64 row positions (`_position`, `_key`, `_skipped`).
        """
        tf = import_tf()
        cfg, layout = self.config, self.layout
        split = split or (cfg.train_split if train else cfg.eval_split)
        epochs = num_epochs if num_epochs is not None else (None if train else 1)
        seed = cfg.seed if train else EVAL_SEED
        shuffle = cfg.shuffle_buffer if train and cfg.shuffle_buffer > 1 else 0
        e0, p1, p2 = (int(x) for x in (start or {}).get("position", (0, 0, 0)))
        concat = layout.packing == "concat"
        w0 = p1 // cfg.window if concat else p1
        records = self.documents(split)

        def epoch_windows(epoch):
            ds = records
            if shuffle:
                key = tf.random.experimental.stateless_fold_in(
                    tf.constant([seed % 2**31, 0], tf.int64), epoch
                )
                ds = ds.batch(shuffle).enumerate()
                ds = ds.map(
                    lambda i, x: tf.random.experimental.stateless_shuffle(
                        x, tf.random.experimental.stateless_fold_in(key, i)
                    )
                ).unbatch()
            ds = ds.batch(cfg.window).enumerate()
            ds = ds.skip(tf.where(epoch == e0, tf.constant(w0, tf.int64), 0))
            return ds.map(lambda w, text: {"text": text, "window": w, "epoch": epoch})

        end = _NO_END if epochs is None else epochs
        windows = tf.data.Dataset.range(e0, max(e0, end)).flat_map(epoch_windows)
        tokenize = packing_lib.tokenize_window_fn(
            self.vocab, cfg.window, layout.append_eos, resume=(e0, p1, p2) if concat else None
        )
        windows = windows.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
        p, autotune = self.process_index, tf.data.AUTOTUNE
        if concat:
            if epochs is not None:  # emit the remainder as a last short chunk
                windows = windows.concatenate(packing_lib.flush_element(end))
            rows = windows.scan(
                packing_lib.concat_initial_state((e0, p1, p2)),
                packing_lib.concat_step_fn(layout.raw_len),
            ).unbatch()
            batches = rows.batch(self.local_batch_size, drop_remainder=train)
            batches = batches.map(packing_lib.chunks_to_rows_fn(layout, seed, p), autotune)
        else:
            windows = windows.scan(tf.constant(0, tf.int64), packing_lib.pending_skipped_fn())
            rows = windows.map(packing_lib.window_to_rows_fn(layout, seed, p), autotune)
            rows = rows.unbatch().skip(p2 if start else 0)
            batches = rows.batch(self.local_batch_size, drop_remainder=train)
        if not with_metadata:
            keys = layout.feature_keys
            batches = batches.map(lambda b: {k: b[k] for k in keys})
        options = tf.data.Options()
        options.deterministic = True
        return batches.prefetch(tf.data.AUTOTUNE).with_options(options)

    # -------------------------------------------------------------------------------- iterators

    @property
    def fingerprint(self) -> str:
        """What a saved iterator state must have been made with to be restored here."""
        layout = self.layout
        desc = {
            "dataset": self.builder.info.full_name,
            "config": dataclasses.asdict(self.config) | {"data_dir": None},
            "vocab": repr(self.vocab),
            "vocab_size": self.vocab.vocab_size,
            "objective": layout.objective,
            "kwargs": repr(sorted(layout.kwargs.items())),
            "packing": layout.packing,
            "lengths": layout.lengths,
            "batch": self.local_batch_size,
            "process": [self.process_index, self.process_count],
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def iterator(self, state: Mapping[str, Any] | None = None) -> BatchIterator:
        """Endless training batches, resumable (see BatchIterator)."""
        return BatchIterator(self, state)

    def zero_batch(self, rows: int | None = None) -> dict[str, np.ndarray]:
        rows = self.local_batch_size if rows is None else rows
        length = self.layout.feature_length
        return {k: np.zeros((rows, length(k)), np.int32) for k in self.layout.feature_keys}

    def eval_batches(
        self, num_batches: int | None = None, split: str | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Eval batches of [local_batch, length]; see the module docstring."""
        count = 0
        it = self.dataset(split, train=False).as_numpy_iterator()
        try:
            for batch in it:
                if num_batches is not None and count >= num_batches:
                    return
                rows = next(iter(batch.values())).shape[0]
                if rows < self.local_batch_size:
                    pad = self.zero_batch(self.local_batch_size - rows)
                    batch = {k: np.concatenate([v, pad[k]]) for k, v in batch.items()}
                count += 1
                yield batch
        finally:
            del it
        while num_batches is not None and count < num_batches:
            count += 1
            yield self.zero_batch()


_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
    # A tf.data iterator still running numpy_function threads when the interpreter finalizes
    # deadlocks the exit; drop them while Python is still fully alive.
    for it in list(_LIVE_ITERATORS):
        it.close()


class BatchIterator:
    """Training batches (numpy dicts) whose position can be saved and restored exactly.

    get_state() -> {'version', 'fingerprint', 'batches', 'position', 'counted_window',
    'skipped_documents'}: small and JSON-able, one per process (save it with the checkpoint).
    set_state(state) -> the next batch is the one that followed when the state was taken.
    """

    VERSION = 1

    def __init__(self, pipeline: Pipeline, state: Mapping[str, Any] | None = None) -> None:
        self._pipeline = pipeline
        self._it: Any = None
        self._batches = 0
        self._position = [0, 0, 0]
        self._counted = [-1, -1]
        self._skipped = 0
        if state is not None:
            self.set_state(state)
        _LIVE_ITERATORS.add(self)

    def close(self) -> None:
        """Stops the background tf.data work (it restarts from the position on the next call)."""
        self._it = None

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            start = {"position": self._position} if self._batches else None
            ds = self._pipeline.dataset(train=True, start=start, with_metadata=True)
            self._it = ds.as_numpy_iterator()
        batch = next(self._it)
        position, keys, skipped = batch.pop("_position"), batch.pop("_key"), batch.pop("_skipped")
        for key, count in zip(keys.tolist(), skipped.tolist(), strict=True):
            if key > self._counted:
                self._counted = key
                self._skipped += count
        self._position = position[-1].tolist()
        self._batches += 1
        return batch

    @property
    def stats(self) -> dict[str, int]:
        return {"batches": self._batches, "skipped_documents": self._skipped}

    def get_state(self) -> dict[str, Any]:
        return {
            "version": self.VERSION,
            "fingerprint": self._pipeline.fingerprint,
            "batches": self._batches,
            "position": list(self._position),
            "counted_window": list(self._counted),
            "skipped_documents": self._skipped,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != self.VERSION:
            raise ValueError(
                f"data iterator state version {state.get('version')!r} is not {self.VERSION}"
            )
        if state.get("fingerprint") != self._pipeline.fingerprint:
            raise ValueError(
                "the data iterator state was saved by a different pipeline (dataset, data "
                "options, objective, batch size or process layout changed); it cannot be "
                "restored exactly"
            )
        self._batches = int(state["batches"])
        self._position = [int(x) for x in state["position"]]
        self._counted = [int(x) for x in state["counted_window"]]
        self._skipped = int(state["skipped_documents"])
        self.close()  # rebuilt from the position on the next call


# ----------------------------------------------------------------------------------------------
# Conveniences


def make_dataset(
    config: DataConfig | Mapping[str, Any],
    *,
    objective: str,
    family: str,
    global_batch_size: int,
    objective_kwargs: Mapping[str, Any] | None = None,
    split: str | None = None,
    train: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    vocab: Vocabulary | None = None,
    num_epochs: int | None = None,
) -> Any:
    """`Pipeline(...).dataset(...)`: a host-local tf.data.Dataset of int32 batches."""
    pipe = Pipeline(
        config,
        objective=objective,
        family=family,
        global_batch_size=global_batch_size,
        objective_kwargs=objective_kwargs,
        vocab=vocab,
        process_index=process_index,
        process_count=process_count,
    )
    return pipe.dataset(split, train=train, num_epochs=num_epochs)


def to_global_arrays(local_batch: Mapping[str, Any], mesh: Any) -> dict[str, Any]:
    """Process-local rows -> global jax.Arrays, the batch split over the mesh's (data, fsdp)."""
    import jax

    from jaxlm import sharding

    spec = sharding.batch_sharding(mesh)
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        rows = value.shape[0] * jax.process_count()
        if rows % ways:
            raise ValueError(
                f"batch feature {key!r}: {rows} global rows are not divisible by the mesh's "
                f"data x fsdp = {ways} ways"
            )
        out[key] = jax.make_array_from_process_local_data(spec, value)
    return out
