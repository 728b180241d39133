"""Off the critical path: batches prepared ahead on a thread, metrics written on a thread.

    batches = Prefetcher(iterator, to_device, depth=2)
    batch, data_state = next(batches)      # data_state: the iterator's position after `batch`

The training loop dispatches step n while the thread reads, packs and transfers batch n + 1 (and
n + 2): host input work overlaps device compute. Each batch comes with the iterator state taken
right after it, so a checkpoint saves the position of the last batch the model consumed, not of
the batches waiting in the queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Background:
    """Runs `produce(put, stopped)` on a daemon thread feeding a bounded queue.

    `produce` calls `put(item)` for each item (it blocks while the queue is full) and returns when
    done or when `stopped()` is true; an exception it raises is re-raised by `get`.
    """

    def __init__(self, produce: Callable[[Callable[[Any], bool], Callable[[], bool]], None],
                 depth: int, name: str) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        """Blocks until `item` is queued; False when the consumer has gone away."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce: Callable) -> None:
        try:
            produce(self._put, self._stop.is_set)
            self._put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises
            self._put(_Failure(error))

    def get(self) -> Any:
        """The next item; StopIteration when `produce` returned; its exception if it raised."""
        item = self._queue.get()
        if item is _DONE:
            self._queue.put(_DONE)  # every later get ends too
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        """Stops the thread (items still queued are dropped) and waits for it."""
        self._stop.set()
        self._thread.join()


class Prefetcher(Iterator[tuple[Any, Any]]):
    """(device batch, iterator state after it), `depth` batches ahead of the consumer."""

    def __init__(self, iterator: Any, to_device: Callable[[Any], Any], depth: int = 2) -> None:
        def produce(put: Callable[[Any], bool], stopped: Callable[[], bool]) -> None:
            for local in iterator:
                if stopped() or not put((to_device(local), iterator.get_state())):
                    return

        self._background = Background(produce, depth, "jaxlm-prefetch")

    def __next__(self) -> tuple[Any, Any]:
        return self._background.get()

    def close(self) -> None:
        self._background.close()


class BackgroundWriter:
    """Calls `write(*args)` on a thread, in order; `close()` drains the queue and re-raises the
    first error a write raised. The loop never waits on a file or TensorBoard flush."""

    def __init__(self, write: Callable[..., None], name: str = "jaxlm-writer") -> None:
        self._write = write
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (args := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    self._write(*args)
                except BaseException as error:  # noqa: BLE001 - re-raised by close()
                    self._error = error

    def submit(self, *args: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(args)

    def close(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
