"""ehrseq.scoring.prefetch: an iterator run ahead on a thread keeps its order, its errors and its bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ehrseq.scoring.prefetch import Prefetched


def test_items_arrive_in_order_and_the_producer_runs_on_another_thread():
    threads: list[str] = []

    def items() -> Iterator[int]:
        for i in range(20):
            threads.append(threading.current_thread().name)
            yield i

    with Prefetched(items(), depth=2) as ahead:
        assert list(ahead) == list(range(20))
    assert set(threads) == {"ehrseq-prefetch"}


def test_the_producer_stays_at_most_depth_items_ahead():
    made: list[int] = []

    def items() -> Iterator[int]:
        for i in range(10):
            made.append(i)
            yield i

    for depth in (1, 3):
        made.clear()
        with Prefetched(items(), depth=depth) as ahead:
            for consumed, item in enumerate(ahead, start=1):
                time.sleep(0.01)  # give the producer every chance to run further ahead
                assert len(made) <= consumed + depth, (depth, item, len(made))
        assert made == list(range(10))


def test_an_error_arrives_after_every_earlier_item_and_ends_the_iteration():
    def items() -> Iterator[int]:
        yield 0
        yield 1
        raise KeyError("shard 2 is bad")

    ahead = Prefetched(items())
    assert next(ahead) == 0 and next(ahead) == 1
    with pytest.raises(KeyError, match="shard 2 is bad"):
        next(ahead)
    with pytest.raises(StopIteration):
        next(ahead)
    ahead.close()


def test_close_stops_the_producer_and_runs_the_generators_cleanup():
    cleaned = threading.Event()
    made: list[int] = []

    def items() -> Iterator[int]:
        try:
            for i in range(1000):
                made.append(i)
                yield i
        finally:
            cleaned.set()

    ahead = Prefetched(items(), depth=1)
    assert next(ahead) == 0
    ahead.close()
    assert cleaned.is_set() and len(made) <= 3
    with pytest.raises(StopIteration):
        next(ahead)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        Prefetched(iter(()), depth=0)
