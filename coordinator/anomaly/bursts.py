"""How a sparse series' bursts compare with its usual ones: how often they come, and how big they are.

A sparse counter (request, error or byte counts that are zero most of the
time) has no useful expected value: its normal bursts are many times its mean
and its sizes are heavy-tailed, so a residual score alarms on ordinary bursts
and misses a counter that runs hot. Its anomalies are a burst rate far above
the usual (a storm) and a burst far beyond the usual sizes, judged on the log
scale where burst sizes are roughly symmetric.
"""

from __future__ import annotations

import math

__all__ = ["BurstRate"]

_GAUSS_MAD = 1.2533  # mean absolute deviation -> sd for Gaussian data
#: The smallest spread of log burst sizes: a burst twice the usual size scores at most 2.8 sd.
MIN_LOG_SCALE = 0.25
#: How fast the share of non-zero samples learns (a memory of 500 samples).
RATE_ALPHA = 0.002


class BurstRate:
    """A chart of how often the series is not zero, and a robust z-score of each burst's log size.

    The chart is an EWMA (weight ``alpha``) of "this sample is not zero":
    ``recent / alpha`` is a discounted count of recent bursts, about
    ``1 / alpha`` samples' worth. It scores against the count the usual share
    of non-zero samples (``rate``) would give on Anscombe's square-root scale,
    where a Poisson count has the same spread whatever its mean (three bursts
    where 0.2 are usual score about as high as 29 where 20 are), scaled to
    the spread of a discounted count. Only a higher rate scores. The rate
    learns slowly from every sample, and ten times slower while the chart is
    far above it (a storm must not teach that storms are normal, but a
    counter that runs hotter for good is learned). A burst's size scores by
    how far its log is above the usual log size, in robust sd of the log
    sizes; only bigger bursts score.

    >>> bursts = BurstRate(alpha=0.05, size_alpha=0.02)
    >>> for i in range(2000):
    ...     x = 100.0 if i % 10 == 0 else 0.0
    ...     bursts.recent = bursts.judge(x)[2]
    ...     bursts.learn_rate(x, bursts.recent, clip=4.0)
    ...     bursts.learn_size(x, clip=4.0)
    >>> round(bursts.rate, 2), bursts.judge(0.0)[0], round(bursts.judge(1e4)[1])
    (0.1, 0.0, 18)
    """

    __slots__ = ("alpha", "log_mean", "log_scale", "rate", "recent", "seen", "size_alpha", "sizes")

    def __init__(self, *, alpha: float, size_alpha: float) -> None:
        self.alpha = alpha
        self.size_alpha = size_alpha
        self.recent = 0.0
        self.rate = 0.0
        self.seen = 0
        self.log_mean = 0.0
        self.log_scale = 0.0
        self.sizes = 0

    def _rate_score(self, recent: float) -> float:
        # 2 (sqrt(k + 3/8) - sqrt(lambda + 3/8)), Anscombe's transform of a Poisson count, over the spread
        # of a discounted count (its variance is its mean / (2 - alpha)).
        k, lam = recent / self.alpha, self.rate / self.alpha
        return max(0.0, 2.0 * math.sqrt(2.0 - self.alpha) * (math.sqrt(k + 0.375) - math.sqrt(lam + 0.375)))

    def judge(self, value: float) -> tuple[float, float, float]:
        """(rate score, size score, the chart's next value) for ``value``."""
        burst = value != 0.0
        recent = self.recent + self.alpha * ((1.0 if burst else 0.0) - self.recent)
        size_score = 0.0
        if burst and self.sizes > 0:
            size_score = max(0.0, math.log(abs(value)) - self.log_mean) / max(self.log_scale, MIN_LOG_SCALE)
        return self._rate_score(recent), size_score, recent

    def learn_rate(self, value: float, recent: float, *, clip: float) -> None:
        """Learn the share of non-zero samples from one sample, breaching or not (``recent``: the chart
        after it, from :meth:`judge`); ten times slower while the chart scores above ``clip``."""
        self.seen = min(self.seen + 1, 1_000_000)
        alpha = max(1.0 / self.seen, RATE_ALPHA)
        if self._rate_score(recent) > clip:
            alpha /= 10.0
        self.rate += alpha * ((0.0 if value == 0.0 else 1.0) - self.rate)

    def learn_size(self, value: float, *, clip: float) -> None:
        """Learn one normal burst's size (zeros have none)."""
        if value == 0.0:
            return
        self.sizes = min(self.sizes + 1, 1_000_000)
        x = math.log(abs(value))
        residual = abs(x - self.log_mean) if self.sizes > 1 else 0.0
        limit = clip * max(self.log_scale, MIN_LOG_SCALE) if self.sizes > 2 else math.inf
        alpha = max(1.0 / self.sizes, self.size_alpha)
        self.log_scale += alpha * (_GAUSS_MAD * min(residual, limit) - self.log_scale)
        self.log_mean += alpha * (x - self.log_mean)
