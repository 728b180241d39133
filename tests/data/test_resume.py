"""Tests for resuming by index (jaxlm.data.records and the pipeline's windows): a restore reads
no record before its window, gives exactly the batches of a straight run, and the TFRecord path
(sequential, skipping) gives the same batches as the ArrayRecord one."""

import logging
import os
import shutil

import numpy as np
import pytest

from jaxlm.data import records, stages
from jaxlm.data.pipeline import Pipeline

from ._util import pipe, same, take

WINDOW, BLOCK = 16, 40  # shuffle blocks that straddle windows


class Counting:
    """A `records.Documents` that remembers every index it was asked for."""

    def __init__(self, docs):
        self.docs, self.reads = docs, []

    def __len__(self):
        return len(self.docs)

    def read(self, indices):
        self.reads += [int(i) for i in indices]
        return self.docs.read(indices)


class CountingPipeline(Pipeline):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counted = {}

    def records(self, split):
        if split not in self.counted:
            self.counted[split] = Counting(super().records(split))
        return self.counted[split]


class TFRecordPipeline(Pipeline):
    def records(self, split):
        return None  # as if the dataset had only TFRecord files


def build(cls, data_dir, objective="clm", family="decoder", **kw):
    base = pipe(data_dir, objective, family, batch=8, window=WINDOW, shuffle_buffer=BLOCK, **kw)
    return cls(base.config, objective=objective, family=family, global_batch_size=8,
               vocab=base.vocab, builder=base.builder, process_index=0, process_count=1)


def test_block_order_is_a_permutation_per_epoch_from_any_start():
    n, kw = 1000, dict(num=1000, block=64, seed=3)
    e0, e1 = (records.epoch_indices(0, n, epoch=e, **kw) for e in (0, 1))
    assert sorted(e0) == sorted(e1) == list(range(n)) and not np.array_equal(e0, e1)
    # Each block of the file order is permuted in place, so documents stay near their block.
    assert all(set(e0[b : b + 64]) == set(range(b, min(b + 64, n))) for b in range(0, n, 64))
    # Any slice of the epoch is found without the rest of it.
    np.testing.assert_array_equal(records.epoch_indices(190, 333, epoch=0, **kw), e0[190:333])
    np.testing.assert_array_equal(records.epoch_indices(0, n, num=n, block=0, seed=3, epoch=5),
                                  np.arange(n))


def no_read_ahead(tf):
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    return options


def test_a_window_from_a_late_position_reads_one_window(data_dir, tf):
    p = build(Pipeline, data_dir)
    docs = Counting(p.records("train"))
    late = len(docs) // WINDOW - 3
    kw = dict(block=BLOCK, seed=0, end_epoch=None)
    for start in ((0, 0), (0, late), (2, late)):
        docs.reads = []
        windows = stages.indexed_windows(docs, WINDOW, start=start, **kw)
        first = next(windows.with_options(no_read_ahead(tf)).as_numpy_iterator())
        assert (first["epoch"], first["window"]) == start
        assert len(docs.reads) == WINDOW  # the window itself, nothing before it
        order = records.epoch_indices(late * WINDOW, (late + 1) * WINDOW, num=len(docs),
                                      block=BLOCK, seed=0, epoch=start[0])
        if start[1]:
            np.testing.assert_array_equal(docs.reads, order)


@pytest.mark.parametrize(
    "objective,family,packing",
    [("clm", "decoder", "concat"), ("prefix_lm", "decoder", "greedy")],
)
def test_resume_reads_nothing_before_its_window_and_matches_a_straight_run(
    data_dir, objective, family, packing
):
    straight = build(Pipeline, data_dir, objective, family, packing=packing).iterator()
    take(straight, 60)
    state = straight.get_state()
    reference = take(straight, 3)
    epoch, a, _ = state["position"]
    w0 = a // WINDOW if packing == "concat" else a
    assert epoch == 0 and w0 >= 4, state  # late enough that skipping would read whole windows

    p = build(CountingPipeline, data_dir, objective, family, packing=packing)
    resumed = p.iterator(state)
    for x, y in zip(reference, take(resumed, 3), strict=True):
        assert same(x, y)
    docs = p.records("train")
    before = records.epoch_indices(0, w0 * WINDOW, num=len(docs), block=BLOCK, seed=0, epoch=0)
    assert docs.reads and not set(docs.reads) & set(before.tolist())
    resumed.close()
    # From the resume window on, each record once: the resume window whole, and the windows read
    # ahead after it (tf.data reads a few in parallel, so the last ones may be partly read).
    reads = list(docs.reads)
    assert len(reads) == len(set(reads))
    windows_read = -(-len(reads) // WINDOW)
    order = records.epoch_indices(w0 * WINDOW, (w0 + windows_read + 2) * WINDOW, num=len(docs),
                                  block=BLOCK, seed=0, epoch=0).tolist()
    assert set(order[:WINDOW]) <= set(reads) <= set(order)


def test_tfrecord_path_gives_the_same_batches_and_says_it_skips(data_dir, caplog):
    indexed = build(Pipeline, data_dir).iterator()
    run = take(indexed, 40)
    sequential = build(TFRecordPipeline, data_dir).iterator()
    for x, y in zip(run[:20], take(sequential, 20), strict=True):
        assert same(x, y)
    state = sequential.get_state()
    w0 = state["position"][1] // WINDOW
    assert w0 > 0, state
    with caplog.at_level(logging.WARNING, logger="jaxlm.data.pipeline"):
        resumed = build(TFRecordPipeline, data_dir).iterator(state)
        for x, y in zip(run[20:], take(resumed, 20), strict=True):
            assert same(x, y)
    skips = [r for r in caplog.records if "reads the" in r.getMessage()]
    assert len(skips) == 1, caplog.records
    assert f"reads the {w0 * WINDOW} records before the position" in skips[0].getMessage()


@pytest.mark.parametrize("objective,packing", [("clm", "concat"), ("prefix_lm", "greedy")])
def test_both_readers_resume_across_epochs_alike(data_dir, tmp_path, objective, packing):
    """The tiny dataset (TFRecord only) and its copy with ArrayRecord files: epochs of a few
    batches, shuffle blocks straddling windows, resumed at several positions."""
    import tensorflow_datasets as tfds

    name = "pipeline_test_texts"
    shutil.copytree(os.path.join(data_dir, name), tmp_path / name)
    assert records.add_array_record_files(tfds.builder(name, data_dir=str(tmp_path)))
    kw = dict(dataset=name, packing=packing, seq_len=32, window=4, shuffle_buffer=5)
    sequential = pipe(data_dir, objective, batch=2, **kw)
    indexed = pipe(str(tmp_path), objective, batch=2, **kw)
    assert sequential.records("train") is None and len(indexed.records("train")) == 10
    it = indexed.iterator()
    run = take(it, 12)
    assert it.get_state()["position"][0] >= 1  # into the second epoch at least
    for x, y in zip(run, take(sequential.iterator(), 12), strict=True):
        assert same(x, y)
    for n in (3, 5, 8):
        again = indexed.iterator()
        take(again, n)
        resumed = indexed.iterator(again.get_state())
        for x, y in zip(run[n:], take(resumed, 12 - n), strict=True):
            assert same(x, y)
        assert resumed.stats == it.stats


def test_corpus_has_array_record_copies_of_its_shards(data_dir):
    p = build(Pipeline, data_dir)
    for split in ("train", "validation"):
        docs = p.records(split)
        assert docs is not None and len(docs) == p.num_documents(split)
    tf_texts = build(TFRecordPipeline, data_dir).documents("validation")
    assert list(p.documents("validation").as_numpy_iterator()) == list(tf_texts.as_numpy_iterator())
    assert records.add_array_record_files(p.builder) == 0  # already there: nothing rewritten
