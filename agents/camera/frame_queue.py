"""A bounded hand-over between capture and detection that drops the oldest item when full.

Capture must never wait for detection: a camera read late is a stale picture
(and an RTSP stream left unread backs up inside the decoder). So ``put``
never blocks; when the queue is full the oldest frame is thrown away and
counted, and the detector always works on the freshest frames there are.

A few items must not be lost that way: the news that the stream dropped or came
back, which has to reach the detection thread in order with the frames around
it. Those are put with ``keep=True``: never evicted, not counted against
``maxsize`` or in ``put_count``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["DropOldestQueue"]

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A thread-safe FIFO of at most ``maxsize`` items; ``put`` evicts the oldest when full.

    >>> q: DropOldestQueue[int] = DropOldestQueue(2)
    >>> [q.put(i) for i in range(3)]
    [None, None, 0]
    >>> q.get(0), q.get(0), q.dropped
    (1, 2, 1)
    >>> [q.put(3), q.put(-1, keep=True), q.put(4), q.put(5)]
    [None, None, None, 3]
    >>> [q.get(0) for _ in range(3)]
    [-1, 4, 5]
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self._items: deque[tuple[bool, T]] = deque()
        self._droppable = 0
        self._ready = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T, *, keep: bool = False) -> T | None:
        """Add ``item`` without waiting; the item evicted to make room, or None.

        ``keep`` items are never evicted and count neither against ``maxsize`` nor in ``put_count``.
        """
        with self._ready:
            if self._closed:
                raise RuntimeError("put on a closed queue")
            evicted = None
            if not keep:
                if self._droppable >= self.maxsize:
                    evicted = self._evict_oldest()
                    self.dropped += 1
                self._droppable += 1
                self.put_count += 1
            self._items.append((keep, item))
            self._ready.notify()
            return evicted

    def _evict_oldest(self) -> T:
        for index, (kept, item) in enumerate(self._items):
            if not kept:
                del self._items[index]
                self._droppable -= 1
                return item
        raise AssertionError("no droppable item to evict")  # _droppable says there is one

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, waiting up to ``timeout`` seconds; None on timeout or when closed and empty."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            kept, item = self._items.popleft()
            if not kept:
                self._droppable -= 1
            return item

    def close(self) -> None:
        """Refuse further puts; getters drain what is left, then get None at once."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)
