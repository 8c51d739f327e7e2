"""A slow drift is one episode: it does not close while the level is still moving.

Held-out gauges of bench/anomaly.py alerted again a few dozen samples after a
drift ended: along a ramp the detector accepted the new level, its episode
closed after its calm samples while the drift chart was already climbing
back toward its threshold, and the next breach opened a new episode. The
gate now waits for the drift chart to settle too. Seeded synthetic ramps;
the broken variant (a gate that ignores the drift chart) is run beside.

A long noisy anomaly is one episode too: it does not close on a dip of its
noise. Long noisy streams of bench/anomaly.py (training seeds 1-8) alerted
13-33 samples after such an anomaly ended: the noise ratio had touched the
settled bar once inside it, the episode closed, the detector learned the
anomaly as normal, and the level's return opened a new episode.
"""

from __future__ import annotations

import math
import pickle

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


def long_noisy(seed: int, noise: float = 1.8) -> tuple[np.ndarray, int]:
    """A Gaussian gauge whose level moves 5 sd for 500 samples from day 4, with ``noise`` times the usual
    noise meanwhile; and where the anomaly ends."""
    rng = np.random.default_rng(seed)
    n = 9 * DAY
    values = 100.0 + 5.0 * np.sin(2 * math.pi * np.arange(n) / DAY) + rng.standard_normal(n)
    start, end = 4 * DAY, 4 * DAY + 500
    extra = rng.standard_normal(end - start) * math.sqrt(noise * noise - 1.0)
    values[start:end] += (5.0 if seed % 2 else -5.0) + extra
    return values, end


def alerts_after_the_end() -> int:
    """Alerts more than 10 samples after a long noisy anomaly ended, over twelve seeded streams."""
    late = 0
    for seed in range(12):
        values, end = long_noisy(seed)
        det = RobustZScoreDetector("gw-1", "load", RobustZScoreOptions())
        late += sum(det.step(i * STEP_MS, float(v)) is not None and i >= end + 10
                    for i, v in enumerate(values))
    return late


def test_a_long_noisy_anomaly_does_not_alert_again_when_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    assert alerts_after_the_end() <= 3
    update = episode.EpisodeGate.update

    def one_dip_settles(gate: episode.EpisodeGate, breach: bool, noise: float = 1.0,
                        drift: float = 0.0) -> bool:
        gate.settled_run = gate.normal_run  # the broken variant: every calm sample counts as settled
        return update(gate, breach, noise, drift)

    monkeypatch.setattr(episode.EpisodeGate, "update", one_dip_settles)
    assert alerts_after_the_end() >= 6


def test_a_dip_of_the_noise_does_not_close_an_episode() -> None:
    gate = episode.EpisodeGate(close_after=2, close_span=0.5, min_calm=3)
    assert gate.update(True)
    for _ in range(4):
        gate.update(True)
    for i in range(30):  # calm samples whose noise is still high, dipping to the bar every third one
        assert not gate.update(False, noise=1.4 if i % 3 == 1 else 1.6)
    assert gate.is_open
    for _ in range(2):
        gate.update(False, noise=1.4)
    assert gate.is_open
    gate.update(False, noise=1.4)  # min_calm settled samples in a row
    assert not gate.is_open


def test_a_gate_pickled_before_the_settled_run_restores() -> None:
    """Checkpoint version 3 wrote gates without ``settled_run``: they restore, counting their calm samples
    as settled, as that build did (so the layout stays version 3 and old checkpoints load)."""
    gate = episode.EpisodeGate(close_after=2, close_span=0.5, min_calm=3)
    for b in (True, True, True, False, False):
        gate.update(b)
    del gate.settled_run  # what an older build pickled
    old = pickle.loads(pickle.dumps(gate))
    assert old.settled_run == old.normal_run == 2 and old.is_open
    old.update(False)
    assert not old.is_open
    new = pickle.loads(pickle.dumps(episode.EpisodeGate(close_after=2)))
    assert new.settled_run == 0 and new.close_after == 2
