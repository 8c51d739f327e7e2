"""The usual value of a metric at each time of day, learned online in a few bins."""

from __future__ import annotations

import math

__all__ = ["SeasonalProfile"]


class SeasonalProfile:
    """A coarse, slowly learned seasonal baseline: ``bins`` values over one period.

    Fleet metrics follow the day (load, temperature, traffic); judging a value
    against the usual value at that hour instead of the last hour is what lets
    a slow drift show at all. The profile is piecewise linear between bin
    centres and learns with a time-based rate, so its memory is
    ``memory_periods`` periods whether a device reports every second or every
    five minutes. With ``period_ms == 0`` it is a single slow baseline.

    >>> profile = SeasonalProfile(period_ms=0, bins=1, memory_periods=1.0)
    >>> profile.value(0) is None
    True
    >>> profile.learn(0, 10.0, rate=0.01); profile.value(0)
    10.0
    """

    __slots__ = ("bin_ms", "counts", "memory_periods", "period_ms", "values")

    def __init__(self, *, period_ms: int, bins: int, memory_periods: float) -> None:
        self.period_ms = period_ms
        self.bin_ms = period_ms / bins if period_ms else 0.0
        self.memory_periods = memory_periods
        self.values = [0.0] * (bins if period_ms else 1)
        self.counts = [0] * len(self.values)

    def _neighbours(self, time_ms: int) -> tuple[int, int, float]:
        if not self.period_ms:
            return 0, 0, 0.0
        position = (time_ms % self.period_ms) / self.bin_ms - 0.5
        below = math.floor(position)
        weight = position - below
        n = len(self.values)
        return below % n, (below + 1) % n, weight

    def value(self, time_ms: int) -> float | None:
        """The usual value at ``time_ms``, or None before any sample near that time."""
        lo, hi, w = self._neighbours(time_ms)
        seen_lo, seen_hi = self.counts[lo] > 0, self.counts[hi] > 0
        if seen_lo and seen_hi:
            return self.values[lo] * (1.0 - w) + self.values[hi] * w
        if seen_lo:
            return self.values[lo]
        if seen_hi:
            return self.values[hi]
        return None

    def sample_rate(self, dt_ms: float) -> float:
        """The per-sample learning rate that gives ``memory_periods`` of memory at this sample interval."""
        if not self.period_ms:
            return 0.0
        return min(0.5, dt_ms / (self.bin_ms * self.memory_periods))

    def learn(self, time_ms: int, target: float, *, rate: float) -> None:
        """Move the two bins around ``time_ms`` toward ``target``; a bin's first samples average."""
        lo, hi, w = self._neighbours(time_ms)
        for index, share in ((lo, 1.0 - w), (hi, w)):
            if share <= 0.0 and self.counts[index] > 0:
                continue
            self.counts[index] = min(self.counts[index] + 1, 1_000_000)
            alpha = max(1.0 / self.counts[index], rate) * (share if self.counts[index] > 1 else 1.0)
            self.values[index] += alpha * (target - self.values[index])

    def shift(self, offset: float) -> None:
        """Accept a new level: move every learned bin by ``offset``."""
        self.values = [v + offset for v in self.values]
