"""Many samples to at most ``points`` chart points: fixed-width time buckets with avg, min and max.

A chart a few hundred pixels wide cannot show 86,400 samples; sending them
all costs the network and the browser. The range is cut into ``points``
buckets of equal width and each bucket that holds samples becomes one point:
its start time, the mean, the extremes (so a one-second spike survives as the
bucket's max) and how many samples it summarises. Where raw samples are gone
(older than ``raw_days``) the store's rollups fill the buckets instead,
weighted by their counts; raw samples win where both exist.

>>> import numpy as np
>>> out = downsample(np.array([0, 1, 2, 3], dtype=np.int64), np.array([1.0, 3.0, 5.0, 7.0]),
...                  since_ms=0, until_ms=4, points=2)
>>> out.t, out.avg, out.min, out.max, out.count
([0, 2], [2.0, 6.0], [1.0, 5.0], [3.0, 7.0], [2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from coordinator.store.records import Rollup

__all__ = ["Downsampled", "bucket_width", "downsample"]


@dataclass(slots=True)
class Downsampled:
    """Chart points as columns: bucket start (ms), mean, min, max and sample count."""

    bucket_ms: int
    t: list[int] = field(default_factory=list)
    avg: list[float | None] = field(default_factory=list)
    min: list[float | None] = field(default_factory=list)
    max: list[float | None] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    raw_samples: int = 0
    rollup_samples: int = 0


def bucket_width(since_ms: int, until_ms: int, points: int) -> int:
    """The bucket width that cuts ``[since_ms, until_ms)`` into at most ``points`` buckets (>= 1 ms)."""
    return max(1, math.ceil((until_ms - since_ms) / points))


def downsample(times: npt.NDArray[np.int64], values: npt.NDArray[np.float64], *, since_ms: int, until_ms: int,
               points: int, rollups: Sequence[Rollup] = ()) -> Downsampled:
    """Bucket sorted ``times``/``values`` (and ``rollups``) of ``[since_ms, until_ms)`` into ``points``."""
    width = bucket_width(since_ms, until_ms, points)
    out = Downsampled(bucket_ms=width, raw_samples=len(times))
    buckets: dict[int, tuple[float, float, float, int]] = {}  # bucket -> (sum, min, max, count)
    if len(times):
        finite = np.isfinite(values)
        times, values = times[finite], values[finite]
    if len(times):
        index = (times - since_ms) // width
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        sums = np.add.reduceat(values, starts)
        lows = np.minimum.reduceat(values, starts)
        highs = np.maximum.reduceat(values, starts)
        counts = np.diff(np.r_[starts, len(values)])
        for b, s, lo, hi, n in zip(index[starts].tolist(), sums.tolist(), lows.tolist(), highs.tolist(),
                                   counts.tolist(), strict=True):
            buckets[b] = (s, lo, hi, n)
    raw = set(buckets)
    for r in rollups:
        if not since_ms <= r.bucket_ms < until_ms or r.count <= 0 or not math.isfinite(r.avg):
            continue
        b = (r.bucket_ms - since_ms) // width
        if b in raw:
            continue
        out.rollup_samples += r.count
        s, lo, hi, n = buckets.get(b, (0.0, math.inf, -math.inf, 0))
        buckets[b] = (s + r.avg * r.count, min(lo, r.min), max(hi, r.max), n + r.count)
    for b in sorted(buckets):
        s, lo, hi, n = buckets[b]
        out.t.append(since_ms + b * width)
        mean = s / n
        out.avg.append(mean if math.isfinite(mean) else None)
        out.min.append(lo if math.isfinite(lo) else None)
        out.max.append(hi if math.isfinite(hi) else None)
        out.count.append(n)
    return out
