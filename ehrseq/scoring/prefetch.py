"""Run an iterator ahead of its consumer on a background thread, a bounded number of items ahead.

A scoring job reads, validates, labels and featurizes shard ``i + 1`` here while the model scores shard ``i``
on the calling thread: Arrow's readers, numpy and torch's kernels release the GIL, so on two or more cores the
work overlaps. The order of the items, and so every output, is the iterator's own. An exception raised by the
iterator reaches the consumer at the item where it was raised, after every earlier item, as it would without
the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_POLL_S = 0.05  # how often a waiting producer looks for close()


class Prefetched(Generic[T]):
    """Iterate ``items`` on a daemon thread, at most ``depth`` items ahead of the consumer (the item being made
    included), so at most ``depth + 1`` items are alive at once. Use as a context manager, or call
    :meth:`close`: it stops the producer after the item it is making and waits for it."""

    def __init__(self, items: Iterable[T], depth: int = 1, name: str = "ehrseq-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (items made ahead), got {depth}")
        self._items: queue.Queue[tuple[bool, object]] = queue.Queue()
        self._room = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, args=(iter(items),), name=name, daemon=True)
        self._thread.start()

    def _wait_room(self) -> bool:
        while not self._stop.is_set():
            if self._room.acquire(timeout=_POLL_S):
                return True
        return False

    def _run(self, it: Iterator[T]) -> None:
        try:
            while self._wait_room():
                try:
                    item = next(it)
                except StopIteration:
                    self._items.put((False, None))
                    return
                self._items.put((True, item))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._items.put((False, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's own finally blocks run here, on the thread that ran it

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        ok, item = self._items.get()
        if ok:
            self._room.release()
            return item  # type: ignore[return-value]
        self._ended = True
        if item is None:
            raise StopIteration
        raise item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the producer (after the item it is making) and wait for its thread to end."""
        self._stop.set()
        self._thread.join()
        self._ended = True

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
