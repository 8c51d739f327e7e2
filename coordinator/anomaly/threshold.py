"""An adaptive alert threshold from a peaks-over-threshold fit of recent scores."""

from __future__ import annotations

import math

__all__ = ["PeaksOverThreshold", "calibrated_score", "shape_variance", "tail_reach", "tail_probability"]

#: The longest the first excess run of a settling threshold lasts (see PeaksOverThreshold.learn).
FIRST_RUN = 20
#: How much higher the floor is while the threshold settles.
SETTLING_FLOOR = 1.5
#: Decades of improbability (-log10 of the tail) that a calibrated score of 0.5 stands for.
_HALF_TAIL_DECADES = 4.0
#: The quantile of the scores above which the tail's shape is measured (the body: many excesses a day).
BODY_QUANTILE = 0.9
#: The slowest the body's excess moments forget (a memory of about 200 excesses, two days at 5 min).
BODY_RATE = 0.005
#: The excesses the body's moments remember (an exponential average's effective sample size).
BODY_MEMORY = 2.0 / BODY_RATE
#: Excesses over the body quantile seen before the measured shape counts.
MIN_BODY = 50
#: Standard errors added to the measured shape (:func:`shape_variance`), a one-sided 95% upper confidence
#: limit: a threshold set where the tail may still be, not only where it most likely is (false alerts cost
#: more than a few sd of sensitivity on a heavy-tailed series).
SHAPE_DOUBT = 1.645
#: The largest tail shape used (a Student t with about 3 degrees of freedom); moments beyond it mislead.
MAX_SHAPE = 0.3


def calibrated_score(tail: float) -> float:
    """A score in [0, 1] that means the same on every stream: ``S / (S + 4)`` with ``S = -log10(tail)``.

    0 is an ordinary sample, 0.5 one that normal data reaches once in 10,000
    samples (the default ``risk``), 0.67 once in 10**8, 0.75 once in 10**12;
    it keeps rising (ranking stays strict) however improbable the sample.

    >>> calibrated_score(1.0), calibrated_score(1e-4), round(calibrated_score(1e-8), 3)
    (0.0, 0.5, 0.667)
    """
    if not tail < 1.0:
        return 0.0
    decades = -math.log10(tail) if tail > 0.0 else 324.0  # below the smallest double
    return decades / (decades + _HALF_TAIL_DECADES)


def shape_variance(shape: float) -> float:
    """``n`` times the variance of the moment estimate of a generalised Pareto shape from ``n`` excesses.

    Hosking and Wallis (Technometrics 1987): ``(1 - xi)^2 (1 - 2 xi)^2 (1 - xi + 6 xi^2) / ((1 - 3 xi)
    (1 - 4 xi))``, infinite from ``xi = 1/4`` (the fourth moment is gone). Taken at ``max(xi, 0)``: 1 for
    an exponential tail (a light tail keeps the exponential anyway), and growing fast with a heavy tail,
    whose measured shape is exactly the one the moments are least sure of.

    >>> shape_variance(-0.1), round(shape_variance(0.2), 2), shape_variance(0.25)
    (1.0, 3.0, inf)
    """
    if not shape > 0.0:
        return 1.0
    if shape >= 0.25:
        return math.inf
    a = (1.0 - shape) * (1.0 - 2.0 * shape)
    return a * a * (1.0 - shape + 6.0 * shape * shape) / ((1.0 - 3.0 * shape) * (1.0 - 4.0 * shape))


def tail_reach(shape: float, decades: float) -> float:
    """How many mean excesses beyond ``u`` a generalised Pareto tail of this ``shape`` with that mean
    falls by ``decades`` e-folds (``decades`` itself for the exponential tail, shape 0)."""
    if shape == 0.0:
        return decades
    return (1.0 - shape) * math.expm1(shape * decades) / shape


def tail_probability(score: float, u: float, mean_excess: float, cluster_rate: float, risk: float,
                     shape: float = 0.0) -> float:
    """The chance that a normal sample scores at least ``score``, from a :class:`PeaksOverThreshold`'s state.

    The fitted tail beyond ``u`` (so ``risk`` at the threshold, unless the
    floor holds it up): exponential, or a generalised Pareto tail of that
    ``shape`` and the same mean excess; below ``u`` a geometric path from 1
    at a score of 0. Alert builders call it with the numbers the threshold
    had at the alerting sample.
    """
    rate = max(cluster_rate, risk)
    if score < u:
        return rate ** (score / u) if score > 0.0 else 1.0
    if mean_excess <= 0.0:
        return rate if score <= u else 0.0
    if shape > 0.0:
        return rate * float((1.0 + shape * (score - u) / ((1.0 - shape) * mean_excess)) ** (-1.0 / shape))
    return rate * math.exp(-(score - u) / mean_excess)


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
    raise the bar for the next one. While it settles (its first ``settle``
    scores; with ``settle = 0``, until it has seen 20 excess runs) every
    excess moves ``u``, afterwards only the first few of each run; during its
    first ``settle`` scores its floor is :data:`SETTLING_FLOOR` times higher,
    since a tail fitted on a few hundred scores is still a guess. State is a
    handful of numbers.

    An exponential tail is right for Gaussian-like noise and wrong for heavy
    tails (a Student t, bursty residuals): fitted at ``u`` it puts the
    threshold where normal data still crosses several times as often as
    ``risk`` says. With ``shape`` it measures the tail's shape where there
    are many excesses, over the scores' :data:`BODY_QUANTILE` (the method of
    moments of a generalised Pareto fit: ``xi = (R - 2) / (2 (R - 1))`` with
    ``R = E[e^2] / E[e]^2``), and extrapolates from ``u`` with the upper
    confidence limit of that estimate (its standard error grows fast with the
    shape: a heavy tail is the one its moments measure worst, and the one
    that alerts on its own noise when under-read). A light tail measures a
    negative shape and keeps the exponential (shape 0), so only series whose
    noise is heavy-tailed get a higher threshold.

    >>> pot = PeaksOverThreshold(base_quantile=0.9, risk=1e-3, floor=0.0, rate=0.05)
    >>> for i in range(5000):
    ...     pot.learn((i * 7919 % 1000) / 1000)  # uniform on [0, 1)
    >>> 0.85 < pot.u < 0.95
    True
    """

    __slots__ = ("base_quantile", "body_count", "body_mean", "body_sq", "body_u", "cluster_max",
                 "cluster_rate", "excesses", "floor", "learned", "mean_excess", "rate", "risk", "run",
                 "settle", "shaped", "u")

    def __init__(self, *, base_quantile: float, risk: float, floor: float, rate: float,
                 settle: int = 0, shape: bool = False) -> None:
        self.base_quantile = base_quantile
        self.floor = floor
        self.rate = rate
        self.risk = risk
        self.settle = settle
        self.learned = 0
        self.cluster_rate = 1.0 - base_quantile
        self.u = 0.0
        self.mean_excess = 0.0
        self.excesses = 0
        self.run = 0
        self.cluster_max = 0.0
        self.shaped = shape
        self.body_u = 0.0  # the scores' BODY_QUANTILE
        self.body_mean = 0.0  # the first two moments of the excesses over it
        self.body_sq = 0.0
        self.body_count = 0

    @property
    def shape(self) -> float:
        """The upper confidence limit of the tail's measured shape, in [0, MAX_SHAPE] (0: exponential).

        Until the body has :data:`MIN_BODY` excesses nothing bounds it but MAX_SHAPE: an unmeasured tail may
        be a heavy one, so a short history does not lower the threshold to the exponential tail's.
        """
        if not self.shaped:
            return 0.0
        if self.body_count < MIN_BODY:  # not measured yet: the doubt is as wide as the shapes used
            return MAX_SHAPE
        if not self.body_mean > 0.0:
            return 0.0
        ratio = self.body_sq / (self.body_mean * self.body_mean)
        if not ratio > 1.0:  # not a number (or a single value): exponential
            return 0.0
        # The estimate plus SHAPE_DOUBT standard errors of the moment estimator (shape_variance) at it.
        seen = self.body_count if self.body_count < BODY_MEMORY else BODY_MEMORY
        xi = 0.5 * (ratio - 2.0) / (ratio - 1.0)
        spread = shape_variance(xi)
        if not spread < math.inf:
            return MAX_SHAPE
        xi += SHAPE_DOUBT * math.sqrt(spread / seen)
        if not xi > 0.0:
            return 0.0
        return xi if xi < MAX_SHAPE else MAX_SHAPE

    @property
    def value(self) -> float:
        """The current threshold."""
        # P(a cluster's peak exceeds u + x) per sample = cluster_rate * exp(-x / mean_excess) = risk, or with
        # a generalised Pareto tail, cluster_rate * (1 + xi x / sigma) ** (-1 / xi), sigma = (1 - xi) mean.
        tail = math.log(max(self.cluster_rate, self.risk) / self.risk)
        floor = SETTLING_FLOOR * self.floor if self.learned < self.settle else self.floor
        return max(floor, self.u + self.mean_excess * tail_reach(self.shape, tail))

    def tail(self, score: float) -> float:
        """The estimated chance that a normal sample scores at least ``score`` (:func:`tail_probability`)."""
        return tail_probability(score, self.u, self.mean_excess, self.cluster_rate, self.risk, self.shape)

    def learn(self, score: float) -> None:
        """Move the base quantile and the tail estimate toward one normal score.

        Excesses are declustered: a run of scores above ``u`` counts once, by
        its maximum, when it ends, and only its first few samples move ``u``.
        Smooth scores (a drift chart) exceed in runs; without this a slow
        anomaly would raise the threshold as fast as it raises the score. A
        stream with few excess runs (a sparse counter's chart) would take long
        to see 20 of them: ``settle`` counts scores instead.
        """
        if self.shaped:
            self._learn_body(score)
        # A step proportional to the tail's width keeps the estimate free of the score's units.
        step = self.rate * max(self.mean_excess, 0.02 * self.u, 1e-3)
        settling = self.learned < self.settle if self.settle else self.excesses < 20
        self.learned = min(self.learned + 1, 1_000_000)
        # From u = 0 nearly every score exceeds it, so the first run would not end (and give the tail a
        # width to step by) until a score happened to fall below u, which creeps up by 1e-3 steps
        # meanwhile: while settling, the first run ends after FIRST_RUN scores.
        first = self.settle and not self.excesses and self.run >= FIRST_RUN
        if score > self.u and not first:
            self.cluster_rate *= 0.999
            self.run += 1
            self.cluster_max = max(self.cluster_max, score - self.u)
            if self.run <= 3 or settling:  # until u has settled, every excess moves it
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

    def _learn_body(self, score: float) -> None:
        """Move the body quantile and its excess moments toward one normal score (every excess counts:
        the shape of the scores' distribution, not of their clusters)."""
        step = self.rate * max(self.body_mean, 0.02 * self.body_u, 1e-3)
        if score > self.body_u:
            self.body_count = min(self.body_count + 1, 1_000_000)
            weight = max(1.0 / self.body_count, BODY_RATE)
            excess = score - self.body_u
            self.body_mean += weight * (excess - self.body_mean)
            self.body_sq += weight * (excess * excess - self.body_sq)
            self.body_u += step * BODY_QUANTILE
        else:
            self.body_u -= step * (1.0 - BODY_QUANTILE)
