"""A bounded queue that hands its items over in batches, waking the consumer once per batch.

``queue.Queue`` wakes its consumer for every item put. The ingest's decoder
wants batches (a window of ``window`` seconds or ``batch_items`` messages,
whichever fills first, or sooner when nothing more arrived for ``idle``
seconds: the burst is over), and thousands of wake-ups a second cost it the
GIL handovers that the network thread needs: here the producer wakes the
consumer only when the queue stops being empty and when a full batch is
waiting; the consumer looks in every ``idle`` seconds meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

__all__ = ["BatchQueue"]

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """Items in order, taken as batches by one consumer; ``put`` waits while ``maxsize`` are queued.

    >>> q: BatchQueue[int] = BatchQueue(maxsize=10, batch_items=2, window=0.0)
    >>> q.put(1), q.put(2), q.put(3)
    (True, True, True)
    >>> q.get_batch(), q.get_batch()
    ([1, 2], [3])
    """

    def __init__(self, *, maxsize: int, batch_items: int, window: float, idle: float | None = None) -> None:
        if maxsize < 1 or batch_items < 1 or window < 0 or (idle is not None and idle <= 0):
            raise ValueError("maxsize, batch_items and idle must be positive and window not negative")
        self.maxsize, self.batch_items, self.window, self.idle = maxsize, batch_items, window, idle
        self._appended = 0
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Queue ``item``; False if the queue stayed full for ``timeout`` seconds (or was closed)."""
        with self._lock:
            if len(self._items) >= self.maxsize and not self._closed:
                self._room.wait_for(lambda: len(self._items) < self.maxsize or self._closed, timeout)
            if self._closed or len(self._items) >= self.maxsize:
                return False
            self._items.append(item)
            self._appended += 1
            count = len(self._items)
            if count == 1 or count == self.batch_items:
                self._ready.notify()
            return True

    def get_batch(self) -> list[T] | None:
        """The next batch (waiting for its first item, then up to ``window`` for it to fill).

        After :meth:`close`, what is still queued comes out in batches, then None.
        """
        with self._lock:
            self._ready.wait_for(lambda: bool(self._items) or self._closed)
            if not self._items:
                return None
            deadline = time.monotonic() + self.window
            while len(self._items) < self.batch_items and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                seen = self._appended
                if self.idle is None:
                    self._ready.wait(remaining)
                elif not self._ready.wait(min(remaining, self.idle)) and self._appended == seen:
                    break  # nothing arrived for `idle` seconds: the burst is over
            items = self._items
            batch = [items.popleft() for _ in range(min(len(items), self.batch_items))]
            self._room.notify_all()
            return batch

    def close(self) -> None:
        """No more items: the consumer gets what is queued, then None; waiting producers give up."""
        with self._lock:
            self._closed = True
            self._ready.notify_all()
            self._room.notify_all()
