"""What kind of series a stream is, learned online: sparse, a few levels, or continuous.

Operators send counters, gauges, percentages, states and settings through the
same pipe; one residual score cannot serve them all. A sparse counter (mostly
zeros, bursts now and then) has no meaningful "expected value"; a series of a
few exact levels (a square wave, a state) has a noise scale of zero between
its steps, so any step would score as infinite. :class:`SeriesShape` learns,
from the samples the detector judged normal, how often the series is exactly
zero, its resolution (the smallest step between two of its values) and, while
it takes at most ``max_levels`` distinct values, those values.
"""

from __future__ import annotations

import math

__all__ = ["CONTINUOUS", "LEVELS", "SERIES_KINDS", "SPARSE", "SeriesShape"]

#: The kinds of series, as the ``series`` option names them (``auto`` is 0: learn which).
SERIES_KINDS = {"auto": 0, "continuous": 1, "sparse": 2, "levels": 3}
CONTINUOUS, SPARSE, LEVELS = 1, 2, 3
#: Share of exact zeros from which ``auto`` treats a series as sparse.
SPARSE_ZEROS = 0.5
#: Samples learned before a series of few values is judged as levels (a continuous one shows more by then).
SETTLED = 100
#: A value this many steps from every known level scores as far as a robust sd: one new level beside the
#: known ones scores 2 (ordinary), three steps off 6.
_STEPS_PER_SD = 0.5
#: ...and a value this far between two steps of the lattice (in steps) scores one robust sd: a half-step
#: value of an integer series scores 25, a value a tenth of a step off 5.
_LATTICE_PER_SD = 0.02


class SeriesShape:
    """The shape of one stream, from the samples it was taught (``learn``).

    >>> shape = SeriesShape(max_levels=4)
    >>> for x in (10.0, 20.0, 20.0, 10.0, 10.0, 20.0) * 20:
    ...     shape.learn(x)
    >>> shape.resolution, shape.levels, shape.kind(0, 0)
    (10.0, [10.0, 20.0], 3)
    >>> shape.novelty(20.0), shape.novelty(0.0), shape.novelty(25.0), shape.novelty(50.0)
    (0.0, 2.0, 25.0, 6.0)
    """

    __slots__ = ("count", "largest", "last", "levels", "many", "max_levels", "resolution", "zero_rate")

    def __init__(self, max_levels: int) -> None:
        self.max_levels = max_levels
        self.count = 0
        self.zero_rate = 0.0
        self.resolution = math.inf
        self.largest = 0.0  # the largest step between two consecutive learned values
        self.last = math.nan
        self.levels: list[float] = []
        self.many = max_levels == 0  # more distinct values than max_levels: not a level series

    def learn(self, value: float) -> None:
        """Learn from one sample judged normal."""
        self.count = min(self.count + 1, 1_000_000)
        x = 1.0 / self.count
        self.zero_rate += max(x, 0.002) * ((1.0 if value == 0.0 else 0.0) - self.zero_rate)
        if value != self.last and not math.isnan(self.last):
            self.resolution = min(self.resolution, abs(value - self.last))
            self.largest = max(self.largest, abs(value - self.last))
        self.last = value
        if not self.many and value not in self.levels:
            if len(self.levels) < self.max_levels:
                self.levels.append(value)
            else:
                self.many = True

    def kind(self, series: int, current: int) -> int:
        """The kind to judge the series as: ``series`` if set (not 0), else what the samples show (a
        series stays sparse while its share of zeros stays above :data:`SPARSE_ZEROS` less 0.1, so that
        one near the limit does not flip; ``current`` is the kind it was judged as last). A series of
        levels that shows more than ``max_levels`` values (or fewer than two) is continuous."""
        few = not self.many and len(self.levels) >= 2 and self.count >= SETTLED
        if series == LEVELS:
            return LEVELS if few else CONTINUOUS
        if series:
            return series
        if self.zero_rate >= (SPARSE_ZEROS - 0.1 if current == SPARSE else SPARSE_ZEROS):
            return SPARSE
        return LEVELS if few else CONTINUOUS

    def floor(self, fraction: float) -> float:
        """``fraction`` of the resolution (0 while it is unknown): the noise scale never goes below it."""
        return fraction * self.resolution if self.resolution < math.inf else 0.0

    def nearest(self, value: float) -> float:
        """The known level nearest ``value`` (the first of two as near); ``value`` when none is known."""
        best, gap = value, math.inf
        for level in self.levels:
            if abs(value - level) < gap:
                best, gap = level, abs(value - level)
        return best

    def novelty(self, value: float) -> float:
        """How unlike this series of levels ``value`` is, as a score on the robust-sd scale (0 while the
        series is not one of few levels): the largest of its distance to the nearest known level in steps
        (over :data:`_STEPS_PER_SD`), its distance off the lattice of steps through that level (over
        :data:`_LATTICE_PER_SD`), and how many steps its jump from the last value is beyond the largest
        jump seen (over :data:`_STEPS_PER_SD`: one step more than ever scores 2)."""
        if self.many or len(self.levels) < 2 or self.count < SETTLED or not self.resolution < math.inf:
            return 0.0
        jump = max(0.0, abs(value - self.last) - self.largest) / self.resolution / _STEPS_PER_SD
        nearest = self.nearest(value)
        if value == nearest:
            return jump
        u = (value - nearest) / self.resolution
        off = abs((u + 0.5) % 1.0 - 0.5)  # to the nearest whole step (a float modulo: no int overflow)
        return max(abs(u) / _STEPS_PER_SD, off / _LATTICE_PER_SD, jump)
