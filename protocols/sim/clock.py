"""The simulators' virtual clock: an event queue in virtual milliseconds."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from protocols.sim.prng import SplitMix64


class VirtualClock:
    """Events at equal times run in the order they were scheduled, so a seed replays exactly."""

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0

    def at(self, time: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, fn))

    def at_random_gaps(
        self, rng: SplitMix64, gap: tuple[int, int], until: int, fn: Callable[[], None]
    ) -> None:
        """Schedule ``fn`` again and again, ``gap`` apart (drawn from ``rng``), before ``until``."""
        t = rng.between(*gap)
        while t < until:
            self.at(t, fn)
            t += rng.between(*gap)

    def run_until(self, end: int, stop: Callable[[], bool] = lambda: False) -> None:
        """Run the events due by ``end``, in order, until ``stop()`` says the run is over."""
        while self._queue and self._queue[0][0] <= end and not stop():
            time, _, fn = heapq.heappop(self._queue)
            self.now = time
            fn()
