"""The river-backed detector (type = "river_holt"): its own behaviour (the contract every detector
keeps is checked by tests/checks/anomaly_detectors.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("river")

from coordinator.anomaly import AlertKind, AnomalyEngine, Severity
from coordinator.anomaly.plugins.river_holt import RiverHoltDetector, RiverHoltOptions
from schemas.errors import ConfigError
from tests.checks.anomaly_detectors import MINUTE, feed


def noisy(n: int, seed: int, level: float = 50.0, trend: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + trend * np.arange(n) + rng.normal(0, 1.0, n)


def trained(n: int = 600, **options: object) -> RiverHoltDetector:
    det = RiverHoltDetector("gw-1", "cpu", RiverHoltOptions.from_mapping(options, "test"))
    assert feed(det, noisy(n, seed=1)) == []
    return det


def test_out_of_range_alpha_is_named() -> None:  # unknown keys: tests/checks/anomaly_detectors.py
    with pytest.raises(ConfigError, match="alpha"):
        AnomalyEngine({"detector": {"type": "river_holt", "alpha": 1.5}})


def test_scores_before_learning_and_scores_are_not_saturated() -> None:
    det = trained()
    t = 600 * MINUTE
    before = det.peek(t, 70.0)
    small = copy.deepcopy(det).step(t, 70.0)
    large = det.step(t, 500.0)
    assert small is not None and large is not None
    assert small.score == pytest.approx(before)
    assert large.score > 5 * small.score  # river's own PredictiveAnomalyDetection would give 1.0 to both
    assert large.severity is Severity.CRITICAL
    assert large.expected_low < 50.0 < large.expected_high


def test_level_shift_alerts_once_then_adapts() -> None:
    det = trained()
    alerts = feed(det, noisy(300, seed=3, level=80.0), start=600)
    assert [i for i, _ in alerts] == [600]
    assert det.peek(900 * MINUTE, 80.0) < det.threshold.value


def test_a_steady_ramp_is_forecast_not_flagged() -> None:
    det = RiverHoltDetector("gw-1", "disk", RiverHoltOptions(warmup=60))
    ramp = noisy(800, seed=4, level=10.0, trend=0.5)
    assert feed(det, ramp) == []
    points = det.forecast(10)
    assert len(points) == 10
    expected_next = 10.0 + 0.5 * 800
    assert points[0].low < expected_next < points[0].high
    assert points[-1].mean > points[0].mean  # the trend goes on
    assert points[-1].high - points[-1].low > points[0].high - points[0].low


def test_stuck_sensor_alerts() -> None:
    det = trained()
    alerts = feed(det, np.full(200, 50.3), start=600)
    assert [a.kind for _, a in alerts] == [AlertKind.STUCK]  # type: ignore[attr-defined]
