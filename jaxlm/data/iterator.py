"""Resumable training batches: a `Pipeline`'s tf.data batches as numpy, with a small state."""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jaxlm.data.pipeline import Pipeline

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

    VERSION = 2  # 2: the block-permutation document order of records.py

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
