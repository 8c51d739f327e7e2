"""An adaptive alert threshold from a peaks-over-threshold fit of recent scores."""

from __future__ import annotations

import math

__all__ = ["PeaksOverThreshold"]


class PeaksOverThreshold:
    """The score that normal data exceeds with probability ``risk``, learned online.

    A fixed threshold is wrong for most streams: heavy-tailed metrics flood,
    quiet ones hide anomalies. Following SPOT/DSPOT (Siffer et al., KDD 2017)
    with an exponential tail (a GPD with shape 0, which needs no solver), it
    tracks a base quantile ``u`` of the scores with a forgetting stochastic
    quantile estimate, the mean peak excess of runs above ``u`` and how often
    such runs occur; the threshold is ``u + mean_excess * ln(run_rate / risk)``
    (``risk`` is then the chance per sample of a false episode), never below
    ``floor``. Callers feed only scores they did not flag, so anomalies do not
    raise the bar for the next one. State is a handful of numbers.

    >>> pot = PeaksOverThreshold(base_quantile=0.9, risk=1e-3, floor=0.0, rate=0.05)
    >>> for i in range(5000):
    ...     pot.learn((i * 7919 % 1000) / 1000)  # uniform on [0, 1)
    >>> 0.85 < pot.u < 0.95
    True
    """

    __slots__ = ("base_quantile", "cluster_max", "cluster_rate", "excesses", "floor", "mean_excess", "rate",
                 "risk", "run", "u")

    def __init__(self, *, base_quantile: float, risk: float, floor: float, rate: float) -> None:
        self.base_quantile = base_quantile
        self.floor = floor
        self.rate = rate
        self.risk = risk
        self.cluster_rate = 1.0 - base_quantile
        self.u = 0.0
        self.mean_excess = 0.0
        self.excesses = 0
        self.run = 0
        self.cluster_max = 0.0

    @property
    def value(self) -> float:
        """The current threshold."""
        # P(a cluster's peak exceeds u + x) per sample = cluster_rate * exp(-x / mean_excess) = risk.
        tail = math.log(max(self.cluster_rate, self.risk) / self.risk)
        return max(self.floor, self.u + self.mean_excess * tail)

    def learn(self, score: float) -> None:
        """Move the base quantile and the tail estimate toward one normal score.

        Excesses are declustered: a run of scores above ``u`` counts once, by
        its maximum, when it ends, and only its first few samples move ``u``.
        Smooth scores (a drift chart) exceed in runs; without this a slow
        anomaly would raise the threshold as fast as it raises the score.
        """
        # A step proportional to the tail's width keeps the estimate free of the score's units.
        step = self.rate * max(self.mean_excess, 0.02 * self.u, 1e-3)
        if score > self.u:
            self.cluster_rate *= 0.999
            self.run += 1
            self.cluster_max = max(self.cluster_max, score - self.u)
            if self.run <= 3 or self.excesses < 20:  # until u has settled, every excess moves it
                self.u += step * self.base_quantile
            return
        ended = self.run > 0
        self.cluster_rate += 0.001 * (ended - self.cluster_rate)
        if ended:
            self.excesses += 1
            weight = max(1.0 / self.excesses, self.rate)
            self.mean_excess += weight * (self.cluster_max - self.mean_excess)
            self.run = 0
            self.cluster_max = 0.0
        self.u -= step * (1.0 - self.base_quantile)
