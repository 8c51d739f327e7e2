"""Stuck-sensor detection: a repeated value for longer than this metric ever holds still."""

from __future__ import annotations

import math

__all__ = ["StuckRun"]


class StuckRun:
    """The length of the current run of identical values and how long is too long.

    A frozen sensor often reports a plausible value, so value-based scores miss
    it. A run is suspicious when it is at least ``min_samples`` long and, given
    how often this metric repeats its previous value when healthy
    (``repeat_rate``, learned outside long runs), at most ``improbability``
    likely. A metric that has never changed is never stuck: constants are not
    sensors.
    """

    __slots__ = ("changes", "improbability", "last", "min_samples", "repeat_rate", "run")

    def __init__(self, *, min_samples: int, improbability: float) -> None:
        self.min_samples = min_samples
        self.improbability = improbability
        self.last = math.nan
        self.run = 0
        self.repeat_rate = 0.0
        self.changes = 0

    def update(self, value: float) -> int:
        """Record one value; returns the current run length (1 when the value changed)."""
        same = value == self.last
        self.run = self.run + 1 if same else 1
        if not same and not math.isnan(self.last):
            self.changes = min(self.changes + 1, 1_000_000)
        self.last = value
        # Long runs are the thing being judged; learning from them would make stuck look normal.
        if self.run <= 3:
            self.repeat_rate += 0.02 * ((1.0 if same else 0.0) - self.repeat_rate)
        return self.run

    @property
    def required(self) -> int | None:
        """The run length that counts as stuck, or None while this metric cannot be judged."""
        if self.changes < 10:
            return None
        rate = self.repeat_rate
        if rate >= 0.99:
            return None
        if rate <= 0.0:
            return self.min_samples
        return max(self.min_samples, math.ceil(math.log(self.improbability) / math.log(rate)))
