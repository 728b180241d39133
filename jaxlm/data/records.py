"""Documents by index: random access to a prepared split's ArrayRecord files, the ArrayRecord
copy of a TFRecord dataset, and the shuffled document order as a function of the index.

A split is readable by index when its records exist as ArrayRecord files: prepared that way
(`download_and_prepare(file_format='array_record')`) or copied beside the TFRecord shards by
`add_array_record_files` (what the offline corpora do, so `as_dataset` keeps working too). The
copy holds the same records in the same shards and order, so document i is the same either way.

The order of an epoch is a block shuffle: documents [b*B, (b+1)*B) of the file order are permuted
by `block_permutation(seed, epoch, b, size)`, so document i of an epoch is found from its block
alone, never from a permutation of the whole dataset, and a pipeline can start at any document.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlm import io as jaxlm_io

logger = logging.getLogger(__name__)

_TFRECORD, _ARRAY_RECORD = ".tfrecord-", ".array_record-"


def block_permutation(seed: int, epoch: int, block: int, size: int) -> np.ndarray:
    """The order of one shuffle block of `size` documents, keyed by (seed, epoch, block)."""
    rng = np.random.Generator(np.random.PCG64([seed % 2**63, epoch, block]))
    return rng.permutation(size)


def epoch_indices(
    start: int, stop: int, *, num: int, block: int, seed: int, epoch: int
) -> np.ndarray:
    """Record indices of the documents [start, stop) of an epoch over `num` records.

    block <= 1: file order. Otherwise the block shuffle of the module doc; only the blocks that
    [start, stop) touches are permuted.
    """
    positions = np.arange(start, min(stop, num), dtype=np.int64)
    if block <= 1 or positions.size == 0:
        return positions
    out = np.empty_like(positions)
    for b in range(int(positions[0]) // block, int(positions[-1]) // block + 1):
        base = b * block
        perm = _cached_permutation(seed, epoch, b, min(block, num - base))
        mine = (positions >= base) & (positions < base + block)
        out[mine] = base + perm[positions[mine] - base]
    return out


@functools.lru_cache(maxsize=4)
def _cached_permutation(seed: int, epoch: int, block: int, size: int) -> np.ndarray:
    # Consecutive windows fall in the same block: permute it once.
    return block_permutation(seed, epoch, block, size)


class Documents:
    """The text feature of a split part's records, by index: `len()`, `read(indices)`."""

    def __init__(self, source: Any, features: Any, feature: str) -> None:
        self._source, self._features, self._feature = source, features, feature

    def __len__(self) -> int:
        return len(self._source)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The documents at `indices` as an object array of bytes."""
        records = self._source.__getitems__([int(i) for i in indices])
        out = np.empty(len(records), object)
        for j, record in enumerate(records):
            out[j] = self._features.deserialize_example_np(record)[self._feature]
        return out


def open_documents(builder: Any, split: str, feature: str) -> Documents | None:
    """Random access to `feature` of `split` (a split string or ReadInstruction), or None when
    the split has no ArrayRecord files (then only sequential TFRecord reading is possible)."""
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    instructions = builder.info.splits[split].file_instructions
    if not instructions:
        return None
    copies = []
    for fi in instructions:
        path = array_record_path(fi.filename)
        if path is None or not jaxlm_io.exists(path):  # local or gs://
            return None
        copies.append(type(fi)(filename=path, skip=fi.skip, take=fi.take,
                               examples_in_shard=fi.examples_in_shard))
    return Documents(ArrayRecordDataSource(copies), builder.info.features, feature)


def array_record_path(path: str) -> str | None:
    """The ArrayRecord shard holding the records of a TFRecord (or ArrayRecord) shard path."""
    name = os.path.basename(path)
    if _ARRAY_RECORD in name:
        return path
    if _TFRECORD not in name:
        return None
    return os.path.join(os.path.dirname(path), name.replace(_TFRECORD, _ARRAY_RECORD, 1))


def add_array_record_files(builder: Any) -> int:
    """Writes an ArrayRecord copy of each TFRecord shard of a prepared builder (same records,
    same order) unless it exists; returns how many shards were written. Makes the dataset
    readable by index (see the module doc); `as_dataset` still reads the TFRecord files."""
    from array_record.python.array_record_module import ArrayRecordWriter

    from jaxlm.data.tfcompat import import_tf

    tf = import_tf()
    written = 0
    for split in builder.info.splits.values():
        for fi in split.file_instructions:
            target = array_record_path(fi.filename)
            if target is None or target == fi.filename or jaxlm_io.exists(target):
                continue
            partial = f"{target}.incomplete-{os.getpid()}"
            writer = ArrayRecordWriter(partial, "group_size:1")  # group 1: one record per read
            for record in tf.data.TFRecordDataset(fi.filename).as_numpy_iterator():
                writer.write(record)
            writer.close()
            os.replace(partial, target)  # atomic: concurrent preparers never see half a file
            written += 1
    if written:
        logger.info("%s: wrote %d ArrayRecord shards", builder.info.full_name, written)
    return written
