"""Precision, recall, false alarms and speed of the online anomaly detector, per kind of series.

Generates seeded metric streams of six kinds, the shapes operators send:

* ``gauge``: level + daily cycle + AR(1) noise, some quantised or heavy-tailed
  (the original bench); spikes, level shifts, slow drifts, stuck sensors.
* ``sparse_counter``: 77-98% zeros with bursts of heavy-tailed integer sizes
  (request, error or byte counts; some in 4 KiB units); storms (a run of
  sustained large bursts) and single bursts far beyond the usual.
* ``quantised``: a handful of integer levels (a state, a setting, a small
  count) that change now and then; values off the levels and level shifts.
* ``square``: an exact two-level square wave of any period and duty cycle;
  values off both levels, a switch that does not come (stuck), a new level.
* ``periodic``: a noiseless sine with a harmonic, daily or not; spikes, level
  shifts, drifts and a flat line, each small beside the amplitude.
* ``long_noisy``: a noisy gauge with long anomalies (150-600 samples) whose
  level moves a few sd while the noise grows two to four times.

Every kind has streams with one kind of anomaly each (so every false alert can
be charged to a kind) and clean streams. An anomaly counts as detected when an
alert falls inside its window (plus a short grace); precision is the share of
alerts inside some window; ``false/10k`` is the false alerts per 10,000
samples of the normal stretches (everything outside the windows and graces,
clean streams included); ``per anomaly`` the alerts inside a detected window
(1 is one episode per anomaly); ``cal true`` and ``cal false`` the median
calibrated score of true and false alerts, and the ``fleet`` rows every kind
together (with how often a true alert's calibrated score ranks above a false
one's). Targets: on every kind precision >= 0.86 and
recall >= 0.83 (the original bench's overall figures for the previous
default) and at most 1 false alert per 10,000 normal samples.

Rows: ``detector`` is the default (``[anomaly.detector]`` with no keys);
``baseline`` is the previous default, the same detector with the options
that turn its series-shape adaptations off (:data:`PREVIOUS_DEFAULT`),
measured in the same run on the same samples; ``rolling`` a plain rolling
z-score with a refractory period; ``naive`` a fixed band of mean ± 3 sd of the
first day. With river installed and ``--river``: ``river_holt`` (the plugin)
and river's own ``StandardAbsoluteDeviation`` and ``HalfSpaceTrees`` scored
through the same adaptive threshold and episodes. The kernel's speed is the
compiled scoring loop over long runs of each kind, beside the previous
default's.

The figures to report come from held-out seeds (the default ``--seeds``),
never from the seeds the defaults were tried on (1-3; the tail shape and its
confidence bound on 1-8). Seeds 21-23 are a second held-out set (checked once
per candidate, never tuned on); 31-33 were used once, for the final figures;
41-43 once, for a change to the threshold that was not kept; 51-53 once, for
the settled run that closes episodes. A new candidate needs a fresh set.

    python bench/anomaly.py [--seeds 11,12,13] [--streams 8] [--days 12] [--quick] [--river] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.anomaly import AnomalyEngine
from coordinator.anomaly.episode import EpisodeGate

INTERVAL_MS = 300_000  # one sample every five minutes
PER_DAY = 86_400_000 // INTERVAL_MS
GRACE = 10
TARGET_PRECISION = 0.86
TARGET_RECALL = 0.83
TARGET_FALSE_PER_10K = 1.0
TARGET_KERNEL_PER_S = 1_000_000
#: The previous default: the detector with its series-shape adaptations off (its alerts are the previous
#: release's, sample for sample).
PREVIOUS_DEFAULT: dict[str, Any] = {
    "series": "continuous", "max_levels": 0, "resolution_floor": 0.0, "smooth": False, "drift_min_shift": 0.0,
    "constant_prone": 1.0, "close_span": 0.0, "threshold_settle": 0, "tail_shape": False,
}


@dataclass
class Window:
    kind: str
    start: int
    end: int  # exclusive; an alert in [start, end + GRACE) detects it


@dataclass
class Stream:
    name: str
    values: np.ndarray
    windows: list[Window] = field(default_factory=list)


@dataclass
class Shape:
    """A generated healthy series and what an anomaly of it is measured against."""

    values: np.ndarray
    unit: float  # the size anomalies are measured in (noise sd, amplitude, level step, burst size)
    extra: dict[str, float] = field(default_factory=dict)
    high: np.ndarray | None = None  # a square wave's samples at its high level


# -- healthy series of each kind ---------------------------------------------------------------------


def ar_noise(rng: np.random.Generator, n: int, sd: float, phi: float, heavy: bool) -> np.ndarray:
    shocks = rng.standard_t(5, n) / math.sqrt(5 / 3) if heavy else rng.standard_normal(n)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = phi * noise[i - 1] + shocks[i] * sd * math.sqrt(1 - phi * phi)
    return noise


def gauge(rng: np.random.Generator, n: int) -> Shape:
    """A healthy metric: level + daily cycle + AR(1) noise; sometimes quantised or heavy-tailed."""
    mean = rng.uniform(10, 500)
    sd = mean * rng.uniform(0.01, 0.05)
    amp = sd * rng.uniform(0, 8)
    phase = rng.uniform(0, 2 * math.pi)
    t = np.arange(n)
    cycle = amp * np.sin(2 * math.pi * t / PER_DAY + phase) + 0.3 * amp * np.sin(4 * math.pi * t / PER_DAY)
    phi = rng.uniform(0, 0.6)
    values = mean + cycle + ar_noise(rng, n, sd, phi, rng.random() < 0.3)
    if rng.random() < 0.25:
        step = sd * 0.5
        values = np.round(values / step) * step
    return Shape(values, sd)


def sparse_counter(rng: np.random.Generator, n: int) -> Shape:
    """Mostly zeros; bursts at a (sometimes daily-varying) rate with log-normal integer sizes."""
    rate = 1.0 - rng.uniform(0.77, 0.98)
    t = np.arange(n)
    if rng.random() < 0.5:
        rate = rate * (1.0 + 0.8 * np.sin(2 * math.pi * t / PER_DAY + rng.uniform(0, 2 * math.pi)))
    median = math.exp(rng.uniform(math.log(3), math.log(5000)))
    sigma = rng.uniform(0.3, 1.2)
    quantum = 4096.0 if rng.random() < 0.3 else 1.0
    sizes = np.maximum(1.0, np.round(median * np.exp(sigma * rng.standard_normal(n)))) * quantum
    values = np.where(rng.random(n) < rate, sizes, 0.0)
    return Shape(values, median * quantum, {"sigma": sigma, "quantum": quantum})


def quantised(rng: np.random.Generator, n: int) -> Shape:
    """A few integer levels: a state that steps up or down now and then, or a slow cycle rounded."""
    levels = int(rng.integers(2, 7))
    step = float(rng.choice([1.0, 1.0, 5.0, 10.0]))
    low = float(rng.integers(0, 50)) * step
    if rng.random() < 0.5:
        stay = rng.uniform(0.9, 0.995)
        state = np.zeros(n, dtype=int)
        state[0] = int(rng.integers(0, levels))
        moves = rng.random(n) > stay
        ups = rng.random(n) < 0.5
        for i in range(1, n):
            s = state[i - 1]
            if moves[i]:
                s = min(levels - 1, s + 1) if ups[i] else max(0, s - 1)
            state[i] = s
    else:
        t = np.arange(n)
        phase = rng.uniform(0, 2 * math.pi)
        wobble = 0.3 * rng.standard_normal(n)
        state = np.clip(np.round((levels - 1) / 2 * (1 + np.sin(2 * math.pi * t / PER_DAY + phase)) + wobble),
                        0, levels - 1).astype(int)
    return Shape(low + step * state.astype(float), step, {"levels": levels})


def square(rng: np.random.Generator, n: int) -> Shape:
    """An exact two-level square wave: any period (a day or a few samples) and duty cycle."""
    period = PER_DAY if rng.random() < 0.3 else int(rng.integers(12, 200))
    duty = rng.uniform(0.2, 0.8)
    low = float(np.round(rng.uniform(0, 100), 1))
    amp = float(np.round(rng.uniform(1, 200), 1))
    phase = int(rng.integers(0, period))
    on = ((np.arange(n) + phase) % period) < duty * period
    return Shape(np.where(on, low + amp, low), amp, {"period": period, "low": low}, high=on)


def periodic(rng: np.random.Generator, n: int) -> Shape:
    """A noiseless sine with a harmonic: a daily period or a shorter one."""
    period = float(rng.choice([PER_DAY, PER_DAY, 144, 72, 36, 2 * PER_DAY / 7]))
    mean = rng.uniform(-50, 500)
    amp = rng.uniform(1, 100)
    phase = rng.uniform(0, 2 * math.pi)
    t = np.arange(n)
    values = mean + amp * np.sin(2 * math.pi * t / period + phase) + 0.3 * amp * np.sin(
        4 * math.pi * t / period + 2 * phase)
    return Shape(values, amp, {"period": period})


def long_noisy(rng: np.random.Generator, n: int) -> Shape:
    """A noisy gauge (AR(1) noise on a daily cycle), never quantised."""
    mean = rng.uniform(10, 500)
    sd = mean * rng.uniform(0.01, 0.05)
    amp = sd * rng.uniform(0, 6)
    t = np.arange(n)
    values = mean + amp * np.sin(2 * math.pi * t / PER_DAY + rng.uniform(0, 2 * math.pi))
    return Shape(values + ar_noise(rng, n, sd, rng.uniform(0, 0.6), rng.random() < 0.3), sd)


# -- anomalies ---------------------------------------------------------------------------------------

Inject = Callable[[np.random.Generator, Shape, int], Window]


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def gauge_spike(rng: np.random.Generator, s: Shape, start: int) -> Window:
    length = int(rng.integers(1, 3))
    s.values[start:start + length] += _sign(rng) * s.unit * rng.uniform(6, 15)
    return Window("spike", start, start + length)


def gauge_level_shift(rng: np.random.Generator, s: Shape, start: int) -> Window:
    s.values[start:] += _sign(rng) * s.unit * rng.uniform(5, 12)
    return Window("level_shift", start, start + 1)


def gauge_drift(rng: np.random.Generator, s: Shape, start: int) -> Window:
    length = int(rng.integers(100, 300))
    size = _sign(rng) * s.unit * rng.uniform(6, 12)
    s.values[start:] += np.minimum(np.arange(len(s.values) - start) / length, 1.0) * size
    return Window("drift", start, start + length)


def stuck(rng: np.random.Generator, s: Shape, start: int) -> Window:
    length = int(rng.integers(60, 200))
    s.values[start:start + length] = s.values[start]
    return Window("stuck", start, start + length)


def storm(rng: np.random.Generator, s: Shape, start: int) -> Window:
    """A counter runs hot: most samples of a run carry bursts several times the usual size."""
    length = int(rng.integers(20, 120))
    quantum = s.extra["quantum"]
    sizes = np.round(s.unit / quantum * rng.uniform(5, 20) * np.exp(0.3 * rng.standard_normal(length)))
    s.values[start:start + length] = np.where(rng.random(length) < 0.9, np.maximum(sizes, 1.0) * quantum, 0.0)
    return Window("storm", start, start + length)


def giant_burst(rng: np.random.Generator, s: Shape, start: int) -> Window:
    """One burst ten to fifty times the usual 99th percentile."""
    p99 = s.unit * math.exp(2.33 * s.extra["sigma"])
    quantum = s.extra["quantum"]
    s.values[start] = round(p99 * rng.uniform(10, 50) / quantum) * quantum
    return Window("burst", start, start + 1)


def off_level(rng: np.random.Generator, s: Shape, start: int) -> Window:
    """A value off every level: a few steps beyond the range, or between two levels."""
    values = s.values[:start]
    high, low = float(values.max()), float(values.min())
    if rng.random() < 0.7:
        x = high + s.unit * rng.uniform(3, 10) if rng.random() < 0.5 else low - s.unit * rng.uniform(3, 10)
    else:
        x = low + (high - low) * rng.uniform(0.1, 0.9) + s.unit * 0.5
    length = int(rng.integers(1, 3))
    s.values[start:start + length] = round(x, 2)
    return Window("spike", start, start + length)


def level_steps(rng: np.random.Generator, s: Shape, start: int) -> Window:
    """Every level moves a few steps from here on (a new range)."""
    s.values[start:] += _sign(rng) * s.unit * float(rng.integers(3, 8))
    return Window("level_shift", start, start + 1)


def square_spike(rng: np.random.Generator, s: Shape, start: int) -> Window:
    low = s.extra["low"]
    if rng.random() < 0.5:
        x = low + s.unit * (1.0 + rng.uniform(0.5, 3))
    else:
        x = low - s.unit * rng.uniform(0.5, 3)
    length = int(rng.integers(1, 3))
    s.values[start:start + length] = round(x, 1)
    return Window("spike", start, start + length)


def missed_switch(rng: np.random.Generator, s: Shape, start: int) -> Window:
    """The wave stops switching for several periods (a valve or relay stuck)."""
    period = int(s.extra["period"])
    length = int(min(max(60, period * rng.uniform(3, 6)), 3 * PER_DAY))
    s.values[start:start + length] = s.values[start]
    return Window("stuck", start, start + length)


def new_amplitude(rng: np.random.Generator, s: Shape, start: int) -> Window:
    """The high level moves by 30-70% of the amplitude from here on (the window opens at its first sample)."""
    assert s.high is not None
    high = s.high[start:]
    s.values[start:] = np.where(high, s.values[start:] + _sign(rng) * s.unit * rng.uniform(0.3, 0.7),
                                s.values[start:])
    first = start + int(np.argmax(high)) if high.any() else start
    return Window("level_shift", first, first + 1)


def periodic_spike(rng: np.random.Generator, s: Shape, start: int) -> Window:
    length = int(rng.integers(1, 3))
    s.values[start:start + length] += _sign(rng) * s.unit * rng.uniform(0.1, 0.5)
    return Window("spike", start, start + length)


def periodic_shift(rng: np.random.Generator, s: Shape, start: int) -> Window:
    s.values[start:] += _sign(rng) * s.unit * rng.uniform(0.2, 0.6)
    return Window("level_shift", start, start + 1)


def periodic_drift(rng: np.random.Generator, s: Shape, start: int) -> Window:
    length = int(rng.integers(100, 300))
    size = _sign(rng) * s.unit * rng.uniform(0.3, 0.8)
    s.values[start:] += np.minimum(np.arange(len(s.values) - start) / length, 1.0) * size
    return Window("drift", start, start + length)


def long_episode(rng: np.random.Generator, s: Shape, start: int) -> Window:
    """The level moves 3-8 sd and the noise grows 2-4 times, for 150-600 samples, then both return."""
    length = int(rng.integers(150, 600))
    end = min(start + length, len(s.values))
    extra = rng.standard_normal(end - start) * s.unit * math.sqrt(rng.uniform(2, 4) ** 2 - 1)
    s.values[start:end] += _sign(rng) * s.unit * rng.uniform(3, 8) + extra
    return Window("long", start, end)


KINDS: dict[str, tuple[Callable[[np.random.Generator, int], Shape], tuple[Inject, ...]]] = {
    "gauge": (gauge, (gauge_spike, gauge_level_shift, gauge_drift, stuck)),
    "sparse_counter": (sparse_counter, (storm, giant_burst)),
    "quantised": (quantised, (off_level, level_steps)),
    "square": (square, (square_spike, missed_switch, new_amplitude)),
    "periodic": (periodic, (periodic_spike, periodic_shift, periodic_drift, stuck)),
    "long_noisy": (long_noisy, (long_episode,)),
}


def make_stream(rng: np.random.Generator, name: str, kind: str, inject: Inject | None, days: int) -> Stream:
    n = days * PER_DAY
    shape = KINDS[kind][0](rng, n)
    stream = Stream(name, shape.values)
    if inject is None:
        return stream
    start = 3 * PER_DAY + int(rng.integers(0, PER_DAY // 2))
    while start < n - PER_DAY // 2:
        stream.windows.append(inject(rng, shape, start))
        start = stream.windows[-1].end + PER_DAY + int(rng.integers(0, PER_DAY))
    return stream


# -- the simple detectors the default is compared with ----------------------------------------------


def naive_alerts(values: np.ndarray) -> list[int]:
    """Indices where a fixed band from the first day is left, one per episode."""
    first = values[:PER_DAY]
    low, high = first.mean() - 3 * first.std(), first.mean() + 3 * first.std()
    gate = EpisodeGate(close_after=10)
    return [i for i, v in enumerate(values) if gate.update(not low <= v <= high)]


def rolling_alerts(values: np.ndarray, window: int = PER_DAY, k: float = 5.0,
                   refractory: int = 50) -> list[int]:
    """A plain rolling z-score over the previous ``window`` samples; then quiet for ``refractory``."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    csq = np.concatenate([[0.0], np.cumsum(values * values)])
    found, quiet_until = [], 0
    for i in range(window, len(values)):
        mean = (csum[i] - csum[i - window]) / window
        var = max((csq[i] - csq[i - window]) / window - mean * mean, 0.0)
        sd = math.sqrt(var)
        if i >= quiet_until and abs(values[i] - mean) > k * max(sd, 1e-9 * max(abs(mean), 1.0)):
            found.append(i)
            quiet_until = i + refractory
    return found


# -- tallies -----------------------------------------------------------------------------------------


@dataclass
class Tally:
    alerts: int = 0
    true_alerts: int = 0
    windows: int = 0
    detected: int = 0
    delays: list[int] = field(default_factory=list)
    samples: int = 0
    normal_samples: int = 0
    alerts_in_detected: int = 0
    calibrated_true: list[float] = field(default_factory=list)
    calibrated_false: list[float] = field(default_factory=list)

    def add(self, stream: Stream, alert_indices: list[int], calibrated: list[float] | None = None) -> None:
        n = len(stream.values)
        self.samples += n
        abnormal = np.zeros(n, dtype=bool)
        for w in stream.windows:
            abnormal[w.start:min(n, w.end + GRACE)] = True
        self.normal_samples += int(n - abnormal.sum())
        self.alerts += len(alert_indices)
        self.true_alerts += sum(bool(abnormal[i]) for i in alert_indices)
        for i, score in zip(alert_indices, calibrated or [], strict=False):
            (self.calibrated_true if abnormal[i] else self.calibrated_false).append(score)
        for w in stream.windows:
            self.windows += 1
            hits = [i for i in alert_indices if w.start <= i < w.end + GRACE]
            if hits:
                self.detected += 1
                self.delays.append(hits[0] - w.start)
                self.alerts_in_detected += len(hits)

    def merge(self, other: Tally) -> None:
        for name in ("alerts", "true_alerts", "windows", "detected", "samples", "normal_samples",
                     "alerts_in_detected"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.delays += other.delays
        self.calibrated_true += other.calibrated_true
        self.calibrated_false += other.calibrated_false

    def ranking(self) -> float | None:
        """The chance that a true alert's calibrated score is above a false one's (ties count half)."""
        if not self.calibrated_true or not self.calibrated_false:
            return None
        t, f = np.array(self.calibrated_true), np.array(self.calibrated_false)
        above = (t[:, None] > f[None, :]).sum() + 0.5 * (t[:, None] == f[None, :]).sum()
        return float(above / (len(t) * len(f)))

    def row(self) -> dict[str, float | int | None]:
        false = self.alerts - self.true_alerts
        return {
            "precision": self.true_alerts / self.alerts if self.alerts else None,
            "recall": self.detected / self.windows if self.windows else None,
            "false_per_10k": 1e4 * false / self.normal_samples if self.normal_samples else 0.0,
            "per_anomaly": self.alerts_in_detected / self.detected if self.detected else None,
            "calibrated_true": float(np.median(self.calibrated_true)) if self.calibrated_true else None,
            "calibrated_false": float(np.median(self.calibrated_false)) if self.calibrated_false else None,
            "ranking": self.ranking(),
            "delay_median": float(np.median(self.delays)) if self.delays else None,
            "delay_p90": float(np.percentile(self.delays, 90)) if self.delays else None,
            "alerts": self.alerts,
            "anomalies": self.windows,
            "samples": self.samples,
        }


# -- river's own detectors, through the same threshold and episodes ---------------------------------


class RiverScorer:
    """A river anomaly model scored online (score before learn), alerting through the detector's own
    adaptive threshold and episode gate so that only the score differs from the default."""

    def __init__(self, model: Any, univariate: bool) -> None:
        from coordinator.anomaly.options import AlertingOptions
        from coordinator.anomaly.threshold import PeaksOverThreshold

        defaults = AlertingOptions()
        self.model = model
        self.univariate = univariate  # river's univariate models read the value as ``y``
        # The default's threshold without its floor (4 robust sd means nothing on these scores' scales).
        self.threshold = PeaksOverThreshold(base_quantile=defaults.base_quantile, risk=defaults.risk,
                                            floor=1e-9, rate=defaults.threshold_rate,
                                            settle=defaults.threshold_settle)
        self.gate = EpisodeGate(defaults.close_after)
        self.failures = 0  # samples the model could not score (counted as 0)

    def alerts(self, values: np.ndarray, burn_in: int = 300, warmup: int = 150) -> list[int]:
        """Alert indices over ``values``: the model first learns ``burn_in`` samples unscored (river's
        models score nothing useful before, HalfSpaceTrees before its first window), then its scores
        teach the threshold for ``warmup`` samples before any may alert."""
        found = []
        for i, v in enumerate(values):
            args: tuple[Any, ...] = (None, float(v)) if self.univariate else ({"x": float(v)},)
            if i < burn_in:
                self.model.learn_one(*args)
                continue
            try:
                score = float(self.model.score_one(*args))
            except (ArithmeticError, TypeError, ValueError):  # GaussianScorer on a flat stretch: sigma < 0
                score = 0.0
                self.failures += 1
            breach = i >= burn_in + warmup and score > self.threshold.value
            if self.gate.update(breach):
                found.append(i)
            if not breach:
                self.model.learn_one(*args)
                self.threshold.learn(score)
        return found


def river_models() -> dict[str, Callable[[], RiverScorer]]:
    try:
        from river import anomaly, compose, preprocessing
    except ImportError:
        return {}
    return {
        "river_sad": lambda: RiverScorer(anomaly.StandardAbsoluteDeviation(), True),
        "river_gauss": lambda: RiverScorer(anomaly.GaussianScorer(window_size=PER_DAY), True),
        "river_hst": lambda: RiverScorer(compose.Pipeline(preprocessing.MinMaxScaler(),
                                                          anomaly.HalfSpaceTrees(seed=1, window_size=250)),
                                         False),
    }


def _river_holt_available() -> bool:
    try:
        import coordinator.anomaly.plugins.river_holt  # noqa: F401  (registers type = "river_holt")
    except ImportError:
        return False
    return True


# -- the run -----------------------------------------------------------------------------------------


def engine_alerts(engine: AnomalyEngine, stream: Stream) -> tuple[list[int], list[float]]:
    """The alerts' sample indices and calibrated scores."""
    samples = [(stream.name, "m", i * INTERVAL_MS, float(v)) for i, v in enumerate(stream.values)]
    alerts = engine.observe_many(samples)
    return [a.time_ms // INTERVAL_MS for a in alerts], [a.calibrated or 0.0 for a in alerts]


def run(seeds: list[int], streams_per_kind: int, days: int, *, river: bool) -> dict[str, Any]:
    engines: dict[str, Callable[[], AnomalyEngine]] = {
        "detector": AnomalyEngine,
        "baseline": lambda: AnomalyEngine({"detector": PREVIOUS_DEFAULT}),
    }
    if river and _river_holt_available():
        engines["river_holt"] = lambda: AnomalyEngine({"detector": {"type": "river_holt"}})
    others: dict[str, Callable[[np.ndarray], list[int]]] = {"rolling": rolling_alerts, "naive": naive_alerts}
    if river:
        for name, make in river_models().items():
            others[name] = lambda values, make=make: make().alerts(values)
    names = [*engines, *others]
    by_kind: dict[str, dict[str, dict[str, Tally]]] = {}  # kind -> detector -> anomaly -> tally
    streams: dict[str, list[Stream]] = {kind: [] for kind in KINDS}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for kind, (_, injects) in KINDS.items():
            for inject in (*injects, None):
                label = inject.__name__ if inject else "clean"
                for s in range(streams_per_kind):
                    streams[kind].append(make_stream(rng, f"{kind}-{label}-{seed}-{s}", kind, inject, days))
    elapsed = dict.fromkeys(names, 0.0)
    for make_engine in engines.values():  # compile (or load) the scoring kernel before the clocks run
        make_engine()
    for kind, kind_streams in streams.items():
        tallies: dict[str, dict[str, Tally]] = {name: {} for name in names}
        for stream in kind_streams:
            label = stream.windows[0].kind if stream.windows else "clean"
            found: dict[str, tuple[list[int], list[float] | None]] = {}
            for name, make_engine in engines.items():
                began = time.perf_counter()
                found[name] = engine_alerts(make_engine(), stream)
                elapsed[name] += time.perf_counter() - began
            for name, detect in others.items():
                began = time.perf_counter()
                found[name] = (detect(stream.values), None)
                elapsed[name] += time.perf_counter() - began
            for name, (alerts, calibrated) in found.items():
                tallies[name].setdefault(label, Tally()).add(stream, alerts, calibrated)
        by_kind[kind] = tallies
    table: dict[str, Any] = {"kinds": {}, "seeds": seeds, "streams_per_kind": streams_per_kind, "days": days}
    fleet = {name: Tally() for name in names}  # every kind together: one fleet, one threshold
    for kind, tallies in by_kind.items():
        rows: dict[str, Any] = {}
        for name, per_anomaly in tallies.items():
            overall = Tally()
            for tally in per_anomaly.values():
                overall.merge(tally)
            fleet[name].merge(overall)
            rows[name] = {"overall": overall.row(), **{k: t.row() for k, t in per_anomaly.items()}}
        table["kinds"][kind] = rows
    table["fleet"] = {name: tally.row() for name, tally in fleet.items()}
    table["samples"] = sum(len(s.values) for ss in streams.values() for s in ss)
    # The whole path per detector: tuples through AnomalyEngine.observe_many, or the plain loops.
    table["samples_per_s"] = {name: table["samples"] / seconds for name, seconds in elapsed.items()}
    table["kernel"] = kernel_speed(streams)
    return table


def kernel_speed(streams: dict[str, list[Stream]], repeat: int = 3) -> dict[str, float]:
    """Samples/s of the compiled scoring loop (``step_many`` over each stream in one run), new and old."""
    from coordinator.anomaly import zscore_kernel
    from coordinator.anomaly.base import create_factory

    if not zscore_kernel.warm_up():
        return {}
    runs = [(np.arange(len(s.values), dtype=np.int64) * INTERVAL_MS, s.values.astype(np.float64))
            for ss in streams.values() for s in ss]
    rates = {}
    for name, config in (("detector", {}), ("baseline", PREVIOUS_DEFAULT)):
        factory = create_factory(config, "bench")
        best = math.inf
        for _ in range(repeat):
            detectors = [factory("d", "m") for _ in runs]
            began = time.perf_counter()
            for det, (t, v) in zip(detectors, runs, strict=True):
                det.step_many(t, v)
            best = min(best, time.perf_counter() - began)
        rates[name] = sum(len(t) for t, _ in runs) / best
    return rates


# -- output ------------------------------------------------------------------------------------------


def _cell(x: float | int | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(table: dict[str, Any], by_anomaly: bool) -> None:
    print(f"seeds {table['seeds']}: {table['streams_per_kind']} streams per anomaly kind (and clean) "
          "per seed "
          f"x {table['days']} days, {table['samples']:,} samples")
    header = (f"{'kind':15}{'detector':12}{'anomaly':13}{'precision':>10}{'recall':>8}{'false/10k':>10}"
              f"{'per anomaly':>12}{'delay p50':>10}{'delay p90':>10}{'alerts':>8}{'anomalies':>10}"
              f"{'cal true':>9}{'cal false':>10}")
    print(header)
    fleet = {name: {"overall": row} for name, row in table["fleet"].items()}
    kinds = [*table["kinds"].items(), ("fleet", fleet)]
    for kind, rows in kinds:
        for name, anomalies in rows.items():
            for label, row in anomalies.items():
                if label != "overall" and not by_anomaly:
                    continue
                print(f"{kind:15}{name:12}{label:13}{_cell(row['precision'], '.3f'):>10}"
                      f"{_cell(row['recall'], '.3f'):>8}{row['false_per_10k']:>10.2f}"
                      f"{_cell(row['per_anomaly'], '.2f'):>12}{_cell(row['delay_median'], '.1f'):>10}"
                      f"{_cell(row['delay_p90'], '.1f'):>10}{row['alerts']:>8}{row['anomalies']:>10}"
                      f"{_cell(row['calibrated_true'], '.3f'):>9}{_cell(row['calibrated_false'], '.3f'):>10}")
    print()
    print(f"targets: precision >= {TARGET_PRECISION}, recall >= {TARGET_RECALL}, "
          f"false alerts <= {TARGET_FALSE_PER_10K:g} per 10,000 normal samples; detector (baseline)")
    print(f"{'kind':15}{'precision':>22}{'recall':>22}{'false/10k':>24}")
    for kind, rows in table["kinds"].items():
        new, old = rows["detector"]["overall"], rows["baseline"]["overall"]
        p, r, f = new["precision"], new["recall"], new["false_per_10k"]
        cells = [
            f"{_cell(p, '.3f')} ({_cell(old['precision'], '.3f')}) "
            f"{_verdict(p is not None and p >= TARGET_PRECISION)}",
            f"{_cell(r, '.3f')} ({_cell(old['recall'], '.3f')}) "
            f"{_verdict(r is not None and r >= TARGET_RECALL)}",
            f"{f:.2f} ({old['false_per_10k']:.2f}) {_verdict(f <= TARGET_FALSE_PER_10K)}",
        ]
        print(f"{kind:15}{cells[0]:>22}{cells[1]:>22}{cells[2]:>24}")
    for name in ("detector", "baseline"):
        row = table["fleet"][name]
        print(f"{name} calibrated scores across the fleet: true alerts median "
              f"{_cell(row['calibrated_true'], '.3f')}, false alerts median "
              f"{_cell(row['calibrated_false'], '.3f')}; "
              f"a true alert outranks a false one {_cell(row['ranking'], '.2f')} of the time")
    print("samples/s through each detector (one process; engines via observe_many): " + ", ".join(
        f"{name} {rate:,.0f}" for name, rate in table["samples_per_s"].items()))
    kernel = table["kernel"]
    if kernel:
        rate, before = kernel["detector"], kernel["baseline"]
        print(f"kernel: {rate:,.0f} samples/s (baseline {before:,.0f}, ratio {rate / before:.2f}) "
              f"target >= {TARGET_KERNEL_PER_S:,} {_verdict(rate >= TARGET_KERNEL_PER_S)}")
    else:
        print("kernel: numba is not installed (the scoring loop runs as plain Python)")


def record_figures(table: dict[str, Any]) -> None:
    """bench/results.py records: each kind's precision, recall and false alerts beside the baseline."""
    from bench.results import record

    for kind, rows in table["kinds"].items():
        new, old = rows["detector"]["overall"], rows["baseline"]["overall"]
        p, r = new["precision"], new["recall"]
        record(f"{kind} precision", math.nan if p is None else p, "", baseline="previous default",
               baseline_value=old["precision"], target=f">= {TARGET_PRECISION}",
               ok=p is not None and p >= TARGET_PRECISION)
        record(f"{kind} recall", math.nan if r is None else r, "", baseline="previous default",
               baseline_value=old["recall"], target=f">= {TARGET_RECALL}",
               ok=r is not None and r >= TARGET_RECALL)
        record(f"{kind} false alerts", new["false_per_10k"], "per 10k samples", baseline="previous default",
               baseline_value=old["false_per_10k"], target=f"<= {TARGET_FALSE_PER_10K:g}",
               ok=new["false_per_10k"] <= TARGET_FALSE_PER_10K)
    kernel = table["kernel"]
    if kernel:
        record("anomaly kernel", kernel["detector"], "samples/s", baseline="previous default",
               baseline_value=kernel["baseline"], target=f">= {TARGET_KERNEL_PER_S:,}",
               ok=kernel["detector"] >= TARGET_KERNEL_PER_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="11,12,13",
                        help="comma-separated held-out seeds (the defaults were tried on 1-8)")
    parser.add_argument("--streams", type=int, default=6,
                        help="streams per anomaly kind (and clean) per seed")
    parser.add_argument("--days", type=int, default=12, help=f"days per stream ({PER_DAY} samples a day)")
    parser.add_argument("--quick", action="store_true", help="one seed, 2 streams per anomaly kind, 8 days")
    parser.add_argument("--river", action="store_true", help="also score river's detectors (slow)")
    parser.add_argument("--by-anomaly", action="store_true", help="a row per anomaly kind too")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    streams, days = (2, 8) if args.quick else (args.streams, args.days)
    if args.quick:
        seeds = seeds[:1]
    table = run(seeds, streams, days, river=args.river)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print_table(table, args.by_anomaly)
    record_figures(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
