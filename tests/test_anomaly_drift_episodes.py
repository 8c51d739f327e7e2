"""A slow drift is one episode: it does not close while the level is still moving.

Held-out gauges of bench/anomaly.py alerted again a few dozen samples after a
drift ended: along a ramp the detector accepted the new level, its episode
closed after its calm samples while the drift chart was already climbing
back toward its threshold, and the next breach opened a new episode. The
gate now waits for the drift chart to settle too. Seeded synthetic ramps;
the broken variant (a gate that ignores the drift chart) is run beside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.anomaly import episode
from coordinator.anomaly.plugins.robust_zscore import RobustZScoreDetector, RobustZScoreOptions

STEP_MS = 300_000
DAY = 288


def ramp(seed: int, length: int, size: float) -> tuple[np.ndarray, int]:
    """A Gaussian gauge with a daily cycle whose level drifts by ``size`` sd over ``length`` samples from
    day 5 on, and stays there."""
    rng = np.random.default_rng(seed)
    n = 9 * DAY
    values = 100.0 + 5.0 * np.sin(2 * math.pi * np.arange(n) / DAY) + rng.standard_normal(n)
    start = 5 * DAY
    values[start:] += np.minimum(np.arange(n - start) / length, 1.0) * size
    return values, start


def alerts_on_ramps() -> tuple[int, int]:
    """(alerts before the ramps, alerts from their starts on) over ten seeded ramps, ``step`` by ``step``."""
    before = after = 0
    for seed in range(5):
        for length, size in ((300, 10.0), (250, 8.0)):
            values, start = ramp(seed, length, size)
            det = RobustZScoreDetector("gw-1", "temp", RobustZScoreOptions())
            found = [i for i, v in enumerate(values) if det.step(i * STEP_MS, float(v)) is not None]
            before += sum(i < start for i in found)
            after += sum(i >= start for i in found)
    return before, after


def test_a_ramp_is_about_one_episode_and_a_gate_blind_to_the_drift_splits_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = alerts_on_ramps()
    assert before == 0
    assert 10 <= after <= 16  # every ramp alerts, most once
    monkeypatch.setattr(episode, "SETTLED_DRIFT", math.inf)  # the broken variant
    before, blind = alerts_on_ramps()
    assert before == 0
    assert blind >= after + 6


def test_a_gate_given_a_moving_level_stays_open_until_it_settles() -> None:
    gate = episode.EpisodeGate(close_after=2, close_span=0.5, min_calm=3)
    assert gate.update(True)
    for _ in range(4):
        gate.update(True)
    for _ in range(20):  # calm samples, but the drift chart is at 0.8 of its threshold
        assert not gate.update(False, drift=0.8)
    assert gate.is_open
    for _ in range(3):
        gate.update(False, drift=0.2)
    assert not gate.is_open
