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
   evenly between processes (`tfds.split_for_jax_process`: disjoint parts that cover it). Read by
   index from ArrayRecord files when the split has them (`Pipeline.records`, records.py: the
   offline corpora always do), else sequentially from the TFRecord files.
2. Shuffle: a block shuffle of `shuffle_buffer` documents, the block's permutation keyed by (seed,
   epoch, block) (`records.block_permutation`, numpy), so the order depends on nothing but the seed
   and differs per epoch, and document i of an epoch is found from its block alone. TFDS shuffles
   examples when it prepares a dataset, so a local shuffle is enough; files are read in order,
   which is what makes positions reproducible. Both readers give the same order.
3. Windows of `window` documents: whitespace-only documents are skipped (counted in
   `BatchIterator.stats`), the rest tokenized in one call (`vocab.tf_tokenize_batch`: the byte
   vocabulary keeps undecodable bytes as they are, SentencePiece decodes them to U+FFFD) and EOS
   appended per document (see layout.py for when).
4. Packing and objective: 'concat' cuts the token stream into chunks of the objective's raw length
   (a `scan` carries the remainder from window to window, so no token is lost), and the objective
   runs once per batch of chunks; 'greedy' / 'none' run the objective on each document piece and
   pack one window at a time (first-fit, with segment ids and positions). Either way one
   `numpy_function` call handles a whole window or batch: the numpy objectives of
   jaxlm/objectives/, bit-identical to `tf_objective_fn` for the same seed, with the per-example
   seeds of `objectives.common.mix_seeds` (CLM and span corruption on the whole batch at once:
   `Form.batch_fn`). Lengths per objective: the table in layout.py. NSP also reads one random
   document of the split per example, by its seed (negatives.py: its NotNext text).
5. Batch of global_batch // process_count rows (padding-free for concat CLM and span corruption),
   prefetch.

Resumption: every row carries where its tokens end in the document stream: (epoch, document,
offset) for concat, (epoch, window, row) for greedy / none. `get_state()` returns that position of
the last batch returned; `set_state()` rebuilds the pipeline from it: the windows start at the one
the position is in, read by index (no record before it is read), and what was consumed of it is
dropped. So a restore costs one window whatever the position, and gives exactly the batches of the
uninterrupted run: seeds and packing depend only on positions, never on how many batches were
drawn. A dataset with TFRecord files only cannot be read by index: its restore reads (and drops)
the records of the epoch before the position's window, and says so in a warning
(`records.add_array_record_files` writes the ArrayRecord copy that makes it O(1)). The state is per
process and refuses a pipeline that differs (fingerprint).

Eval (`eval_batches`): the eval split, unshuffled, one pass, the objective seeded by a fixed eval
seed (the same examples for every run), the concat remainder emitted as a last short chunk, and the
last batch padded with all-zero rows (loss weights 0). Give `num_batches` on multi-host runs: every
process then yields exactly that many batches (all-zero ones once its part is exhausted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxlm.data import layout as layout_lib
from jaxlm.data import stages
from jaxlm.data.iterator import BatchIterator
from jaxlm.data.negatives import OtherDocuments
from jaxlm.data.records import Documents, open_documents
from jaxlm.data.sources import DataConfig, check_text_feature, load_builder, make_vocabulary
from jaxlm.data.tfcompat import import_tf
from jaxlm.data.tokenizer import Vocabulary

EVAL_SEED = 0
logger = logging.getLogger(__name__)


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
        self._records: dict[str, Documents | None] = {}
        self.local_batch_size = global_batch_size // process_count
        # Objective / family / packing first: cheap, and before any vocabulary training.
        layout_lib.check_choices(objective, family, config.seq_len, config.packing)
        self.builder = builder if builder is not None else load_builder(config)
        check_text_feature(self.builder, config.text_feature)
        self.vocab = vocab if vocab is not None else make_vocabulary(config, self.builder)
        self.layout = layout_lib.resolve_layout(
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

    def records(self, split: str) -> Documents | None:
        """This process's part of `split` by index (records.py), None if only TFRecord files."""
        if split not in self._records:
            self._check_not_empty(split)
            host = self.host_split(split)
            self._records[split] = open_documents(self.builder, host, self.config.text_feature)
        return self._records[split]

    def documents(self, split: str) -> Any:
        """tf.data.Dataset of this process's raw document strings of `split`, in file order."""
        records = self.records(split)
        if records is not None:
            kw = dict(block=0, seed=0, start=(0, 0), end_epoch=1)
            windows = stages.indexed_windows(records, self.config.window, **kw)
            return windows.map(lambda w: w["text"]).unbatch()
        return self._tfrecord_documents(split)

    def _check_not_empty(self, split: str) -> None:
        if self.num_documents(split) == 0:
            raise ValueError(
                f"split {split!r} of {self.builder.info.full_name} holds no document for process "
                f"{self.process_index} of {self.process_count}"
            )

    def _tfrecord_documents(self, split: str) -> Any:
        import tensorflow_datasets as tfds

        ds = self.builder.as_dataset(
            split=self.host_split(split),
            shuffle_files=False,
            read_config=tfds.ReadConfig(add_tfds_id=False),
        )
        feature = self.config.text_feature
        return ds.map(lambda ex: ex[feature])

    def _windows(
        self, split: str, seed: int, shuffle: int, start: tuple[int, int], end: int | None
    ) -> Any:
        """Windows of documents from `start` = (epoch, window) on (stages.py)."""
        kw = dict(block=shuffle, seed=seed, start=start, end_epoch=end)
        records = self.records(split)
        if records is not None:
            return stages.indexed_windows(records, self.config.window, **kw)
        if start[1]:
            logger.warning(
                "resuming a TFRecord dataset reads the %d records before the position (%s has "
                "no ArrayRecord files: records.add_array_record_files makes them)",
                start[1] * self.config.window,
                self.builder.info.full_name,
            )
        return stages.sequential_windows(self._tfrecord_documents(split), self.config.window, **kw)

    def _other_documents(self, split: str, seed: int, shuffle: int) -> OtherDocuments | None:
        """Where NSP draws its NotNext documents (negatives.py): this split, read by index."""
        if not self.layout.other_documents:
            return None
        records = self.records(split)
        if records is None:
            raise ValueError(
                f"objective {self.layout.objective!r} draws random documents of split {split!r} "
                f"of {self.builder.info.full_name}, which needs them readable by index: write "
                "the ArrayRecord copy once with jaxlm.data.records.add_array_record_files(builder)"
            )
        return OtherDocuments(records, self.vocab, block=shuffle, seed=seed)

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
        windows = self._windows(split, seed, shuffle, (e0, w0), epochs)
        others = self._other_documents(split, seed, shuffle)
        tokenize = stages.tokenize_window_fn(
            self.vocab, cfg.window, layout.append_eos, resume=(e0, p1, p2) if concat else None
        )
        windows = windows.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
        p, autotune = self.process_index, tf.data.AUTOTUNE
        if concat:
            if epochs is not None:  # emit the remainder as a last short chunk
                windows = windows.concatenate(stages.flush_element(epochs))
            rows = windows.scan(
                stages.concat_initial_state((e0, p1, p2)),
                stages.concat_step_fn(layout.raw_len),
            ).unbatch()
            batches = rows.batch(self.local_batch_size, drop_remainder=train)
            to_rows = stages.chunks_to_rows_fn(layout, seed, p, others)
            batches = batches.map(to_rows, autotune)
        else:
            windows = windows.scan(tf.constant(0, tf.int64), stages.pending_skipped_fn())
            rows = windows.map(stages.window_to_rows_fn(layout, seed, p, others), autotune)
            rows = rows.unbatch().skip(p2 if start else 0)
            batches = rows.batch(self.local_batch_size, drop_remainder=train)
        if not with_metadata:
            keys = layout.feature_keys
            batches = batches.map(lambda b: {k: b[k] for k in keys})
        options = tf.data.Options()
        options.deterministic = True
        # No autotuning thread: it sleeps for its optimization period (growing to tens of
        # seconds) and deleting an iterator waits for it, which stalled the end of a run or an
        # eval pass by up to 40 s (measured). AUTOTUNE maps then run at the host's core count;
        # batches/s of every comparison arm measured the same either way.
        options.autotune.enabled = False
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
