"""Heavy-tailed gauges: the threshold fits the tail's shape, so their noise does not alert as anomalies.

Held-out gauges of bench/anomaly.py raised two false alerts per 10,000
samples, four in five of them on gauges with Student-t noise: an exponential
tail fitted at the 98th percentile of the scores put the threshold where such
noise still crosses several times as often as ``risk`` allows. These streams
are small, seeded and synthetic; each check is also run against the broken
variant (``tail_shape = false``, the exponential tail) to show it can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.anomaly import AlertKind, AnomalyEngine
from coordinator.anomaly.plugins.robust_zscore import RobustZScoreDetector, RobustZScoreOptions
from coordinator.anomaly.series_shape import CONTINUOUS
from coordinator.anomaly.threshold import (
    BODY_MEMORY,
    MAX_SHAPE,
    MIN_BODY,
    SHAPE_DOUBT,
    PeaksOverThreshold,
    shape_variance,
    tail_probability,
)
from schemas.errors import ConfigError

STEP_MS = 300_000  # five minutes, as the bench samples
DAY = 288
DAYS = 12


def gauge(seed: int, n: int = DAYS * DAY, *, df: int = 0) -> np.ndarray:
    """A gauge with a daily cycle and Gaussian noise (``df = 0``) or Student-t noise of ``df`` degrees."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_t(df, n) if df else rng.standard_normal(n)
    return 100.0 + 6.0 * np.sin(2 * math.pi * np.arange(n) / DAY) + noise


def run(values: np.ndarray, **options: object) -> tuple[RobustZScoreDetector, list[int]]:
    """A detector (default options unless given) over ``values``: it and the indices it alerted at."""
    det = RobustZScoreDetector("gw-1", "load", RobustZScoreOptions.from_mapping(options, "test"))
    times = [i * STEP_MS for i in range(len(values))]
    return det, [i for i, _ in det.step_many(times, values.tolist())]


def false_alerts(df: int, **options: object) -> int:
    """Alerts over six clean 12-day gauges (20,736 samples): every one is a false alert."""
    return sum(len(run(gauge(seed, df=df), **options)[1]) for seed in range(6))


def pot(shape: bool) -> PeaksOverThreshold:
    return PeaksOverThreshold(base_quantile=0.98, risk=1e-4, floor=0.0, rate=0.05, settle=200, shape=shape)


def test_heavy_tailed_noise_raises_few_false_alerts_and_the_exponential_tail_many() -> None:
    shaped, exponential = false_alerts(3), false_alerts(3, tail_shape=False)
    assert shaped <= 8  # about 3 per 10,000 samples; t(3) is beyond MAX_SHAPE, so not quite the risk
    assert exponential > 2 * shaped  # the broken variant: what the held-out gauges showed


def test_gaussian_noise_keeps_the_exponential_tail() -> None:
    alerts = [run(gauge(seed))[1] for seed in range(3)]
    exponential = [run(gauge(seed), tail_shape=False)[1] for seed in range(3)]
    assert sum(map(len, alerts)) <= 2
    assert sum(map(len, alerts)) <= sum(map(len, exponential)) + 1  # no more sensitive than before


def test_the_measured_shape_tells_heavy_tails_from_light_ones() -> None:
    rng = np.random.default_rng(7)
    light, heavy, off = pot(True), pot(True), pot(False)
    for z, t in zip(np.abs(rng.standard_normal(5000)), np.abs(rng.standard_t(3, 5000)), strict=True):
        light.learn(float(z))
        heavy.learn(float(t))
        off.learn(float(t))
    assert light.shape == 0.0
    assert 0.15 < heavy.shape <= MAX_SHAPE
    assert off.shape == 0.0  # shape = False: exponential whatever the scores
    assert heavy.value > off.value  # the same scores, a threshold further out


def measured(raw: float, excesses: int) -> PeaksOverThreshold:
    """A shaped threshold whose body moments give the moment estimate ``raw`` from ``excesses`` excesses."""
    th = pot(True)
    th.body_count = excesses
    th.body_mean = 1.0
    th.body_sq = (2.0 - 2.0 * raw) / (1.0 - 2.0 * raw)  # xi = (R - 2) / (2 (R - 1)) solved for R
    return th


def test_a_heavier_measured_tail_is_given_more_doubt() -> None:
    """Gauges of seeds 21-23 raised 1.07 false alerts per 10,000 samples, most on Student-t noise: the bound
    added 1 / sqrt(n) to every measured shape, the exponential tail's standard error, while the moments
    are far less sure of a heavy tail (Hosking and Wallis: three times the variance at a shape of 0.2)."""
    n = int(BODY_MEMORY)
    light, heavy = measured(0.0, n).shape, measured(0.15, n).shape
    assert light == pytest.approx(SHAPE_DOUBT / math.sqrt(n))
    assert heavy - 0.15 == pytest.approx(SHAPE_DOUBT * math.sqrt(shape_variance(0.15) / n))
    assert heavy - 0.15 > 1.2 * light  # before: the same margin for both
    assert measured(0.26, n).shape == MAX_SHAPE  # beyond 1/4 the moment estimate's variance is infinite


def test_an_unmeasured_tail_is_given_the_widest_shape() -> None:
    """Until the body has MIN_BODY excesses the shape is unknown: the threshold assumes the heaviest tail it
    fits rather than the lightest (before: the exponential, shape 0)."""
    assert measured(-0.3, MIN_BODY - 1).shape == MAX_SHAPE
    assert measured(-0.3, MIN_BODY).shape == 0.0
    assert pot(False).shape == 0.0  # shape = False: exponential whatever it has measured


def test_the_tail_probability_is_the_risk_at_the_threshold_and_falls_beyond() -> None:
    rng = np.random.default_rng(3)
    th = pot(True)
    for t in np.abs(rng.standard_t(3, 5000)):
        th.learn(float(t))
    assert th.shape > 0.0 and th.value > th.floor
    assert th.tail(th.value) == pytest.approx(th.risk, rel=1e-9)
    assert th.tail(2 * th.value) < th.tail(th.value) < th.tail(th.u)
    # The Pareto tail falls more slowly than the exponential one with the same mean excess.
    args = (2 * th.value, th.u, th.mean_excess, th.cluster_rate, th.risk)
    assert tail_probability(*args, th.shape) > tail_probability(*args)


def test_a_large_spike_on_a_heavy_tailed_gauge_still_alerts() -> None:
    values = gauge(11, df=3)
    at = 10 * DAY + 17
    values[at] += 60.0  # t(3) noise has sd 1.7: 35 sd
    det, alerts = run(values)
    assert det.threshold.shape > 0.0
    assert at in alerts


def test_only_a_continuous_series_fits_a_shape() -> None:
    """Burst sizes and level novelties are mostly exactly 0: their moments say nothing about a tail."""
    rng = np.random.default_rng(5)
    n = 6 * DAY
    counter = np.where(rng.random(n) < 0.1, np.round(np.exp(rng.normal(5, 1.5, n))), 0.0)
    levels = np.repeat(rng.integers(0, 4, n // 12), 12).astype(float) * 5.0
    for values in (counter, levels):
        det, _ = run(values)
        assert det.kind != CONTINUOUS
        assert not det.threshold.shaped and det.threshold.shape == 0.0
    det, _ = run(gauge(2, n, df=3))
    assert det.kind == CONTINUOUS and det.threshold.shaped


def test_a_smooth_series_judged_by_its_trend_fits_no_shape() -> None:
    """A noiseless cycle's trend residual is the predictor's own error, not noise: no shape, so a large
    anomaly keeps the calibrated score the exponential tail gives it."""
    t = np.arange(8 * DAY)
    values = 200.0 + 40.0 * np.sin(2 * math.pi * t / 36 + 0.5) + 12.0 * np.sin(4 * math.pi * t / 36 + 1.0)
    det, alerts = run(values[:6 * DAY])
    assert not alerts and det._smooth()
    assert not det.threshold.shaped and det.threshold.shape == 0.0
    # (shaped like a gauge, this threshold measured the maximum shape and this alert scored 0.68)
    alert = det.step(6 * DAY * STEP_MS, float(values[6 * DAY]) + 40.0)
    assert alert is not None and alert.calibrated is not None and alert.calibrated > 0.9


def test_alerts_carry_a_calibrated_score_from_the_shaped_tail() -> None:
    values = gauge(4, df=3)
    values[9 * DAY] -= 80.0
    det, _ = run(values[:9 * DAY])
    assert det.threshold.shape > 0.0
    alert = det.step(9 * DAY * STEP_MS, float(values[9 * DAY]))
    assert alert is not None and alert.kind is AlertKind.DEVIATION
    assert alert.calibrated is not None and 0.5 < alert.calibrated < 1.0


def test_tail_shape_must_be_true_or_false() -> None:
    with pytest.raises(ConfigError, match="tail_shape must be true or false"):
        AnomalyEngine({"detector": {"tail_shape": "yes"}})
    AnomalyEngine({"detector": {"tail_shape": False}})
