"""The prefetcher and the background writer: same items, same order, errors surface."""

import threading

import pytest

from jaxlm.prefetch import BackgroundWriter, Prefetcher


class Counting:
    """An iterator with a position, as the data pipeline's BatchIterator has."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.position, self.n, self.fail_at = 0, n, fail_at

    def __iter__(self):
        return self

    def __next__(self) -> int:
        if self.position == self.fail_at:
            raise RuntimeError(f"bad record {self.position}")
        if self.position >= self.n:
            raise StopIteration
        self.position += 1
        return self.position - 1

    def get_state(self) -> dict:
        return {"position": self.position}


def test_batches_come_in_order_with_the_state_after_each():
    batches = Prefetcher(Counting(6), lambda x: x * 10, depth=2)
    items = list(batches)
    assert items == [(10 * i, {"position": i + 1}) for i in range(6)]
    with pytest.raises(StopIteration):
        next(batches)
    batches.close()


def test_the_reader_stays_at_most_depth_plus_one_ahead():
    iterator = Counting(100)
    batches = Prefetcher(iterator, lambda x: x, depth=2)
    assert next(batches) == (0, {"position": 1})
    # One item taken, two queued, one more read and waiting for room: never the whole stream.
    for _ in range(50):
        if iterator.position >= 4:
            break
        threading.Event().wait(0.01)
    assert iterator.position <= 4
    batches.close()


def test_an_error_in_the_reader_is_raised_in_the_consumer():
    batches = Prefetcher(Counting(10, fail_at=3), lambda x: x)
    assert [next(batches)[0] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="bad record 3"):
        next(batches)
    batches.close()


def test_close_stops_a_reader_that_waits_for_room():
    batches = Prefetcher(Counting(10**9), lambda x: x, depth=1)
    next(batches)
    batches.close()  # returns: the thread saw the stop while the queue was full
    assert not any(t.name == "jaxlm-prefetch" and t.is_alive() for t in threading.enumerate())


def test_background_writer_keeps_order_and_reports_the_first_error():
    seen = []
    writer = BackgroundWriter(seen.append)
    for i in range(100):
        writer.submit(i)
    writer.close()
    assert seen == list(range(100))

    def fail(item):
        raise OSError(f"disk full at {item}")

    writer = BackgroundWriter(fail)
    writer.submit(1)
    writer.submit(2)
    with pytest.raises(OSError, match="disk full at 1"):
        writer.close()
