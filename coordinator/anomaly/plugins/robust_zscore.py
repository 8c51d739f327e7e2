"""The default online detector: robust z-scores against a seasonal baseline, per stream.

Each sample is judged twice, before anything is learned from it:

* **deviation** — ``|x - expected| / scale``, where ``expected`` is the usual
  value at this time of day (a :class:`SeasonalProfile`) plus a fast offset
  that follows the recent level, and ``scale`` is an exponentially weighted
  mean absolute residual times 1.2533 (a robust standard deviation for
  Gaussian noise). Catches spikes and level shifts at their first sample.
* **drift** — ``|offset| / offset_scale``: an EWMA control chart of how far
  the recent level sits from the usual one. Catches slow trends that the fast
  residual follows and never flags.

The larger of the two is the score: unbounded, so a bigger anomaly scores
higher and alerts do not tie. A :class:`PeaksOverThreshold` threshold adapts
to each stream's own tail; an :class:`EpisodeGate` turns breaches into one
alert per episode; a :class:`StuckRun` catches frozen sensors. Learning is
clipped (a spike moves nothing much) and frozen on breaching samples; after
``adapt_after`` consecutive breaches the detector accepts the new level by
shifting its profile, so a level shift alerts once and then goes quiet.

Per-stream state is a few dozen floats (with the default 24 profile bins).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.anomaly.alert import Alert, AlertKind, Severity
from coordinator.anomaly.base import ForecastPoint, StreamDetector, register_detector, sample_interval
from coordinator.anomaly.episode import EpisodeGate
from coordinator.anomaly.options import (
    AlertingOptions,
    alerting_options,
    check_keys,
    float_option,
    int_option,
)
from coordinator.anomaly.seasonal_profile import SeasonalProfile
from coordinator.anomaly.stuck import StuckRun

__all__ = ["RobustZScoreDetector", "RobustZScoreOptions"]

logger = logging.getLogger(__name__)

_GAUSS_MAD = 1.2533  # E|N(0,1)| = 0.7979; dividing by it turns a mean absolute residual into an sd
_DAY_MS = 86_400_000
_KERNEL_MIN_RUN = 8  # shortest run step_many hands to the kernel (compiled, it breaks even at about 4)


@dataclass(frozen=True, slots=True)
class RobustZScoreOptions(AlertingOptions):
    """The ``[anomaly.detector]`` table for ``type = "robust_zscore"``; shared by every stream."""

    warmup: int = 120
    level_alpha: float = 0.05
    scale_alpha: float = 0.02
    clip: float = 4.0
    season_ms: int = _DAY_MS
    season_bins: int = 24
    season_memory: float = 5.0

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], where: str) -> RobustZScoreOptions:
        """Validate an operator's table; an unknown or out-of-range key raises ConfigError naming it."""
        check_keys(where, options, set(cls.__dataclass_fields__))
        d = cls()
        return cls(
            warmup=int_option(where, options, "warmup", d.warmup, low=2, high=10_000_000),
            level_alpha=float_option(where, options, "level_alpha", d.level_alpha, low=0, high=1,
                                     low_open=True),
            scale_alpha=float_option(where, options, "scale_alpha", d.scale_alpha, low=0, high=1,
                                     low_open=True),
            clip=float_option(where, options, "clip", d.clip, low=1, high=100),
            season_ms=int_option(where, options, "season_ms", d.season_ms, low=0, high=366 * _DAY_MS),
            season_bins=int_option(where, options, "season_bins", d.season_bins, low=1, high=1440),
            season_memory=float_option(where, options, "season_memory", d.season_memory, low=0.1,
                                       high=1000),
            **alerting_options(where, options, d),
        )


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.4e}"


@register_detector
class RobustZScoreDetector(StreamDetector):
    """Seasonal robust z-score with drift chart, stuck check, adaptive threshold and episodes.

    >>> det = RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions(warmup=50, season_ms=0))
    >>> alerts = [det.step(i * 1000, 40.0 + (i % 7) * 0.5) for i in range(200)]
    >>> any(alerts)
    False
    >>> alert = det.step(200_000, 95.0)
    >>> alert.kind.value, alert.score > alert.threshold
    ('deviation', True)
    """

    TYPE = "robust_zscore"

    __slots__ = ("device", "drift_threshold", "dt_ms", "first_ms", "gate", "last_ms", "metric", "n", "offset",
                 "offset_scale", "opts", "profile", "run_shift", "scale", "stuck", "stuck_open", "threshold")

    def __init__(self, device: str, metric: str, opts: RobustZScoreOptions) -> None:
        self.device = device
        self.metric = metric
        self.opts = opts
        self.n = 0
        self.last_ms: int | None = None
        self.first_ms: int | None = None
        self.dt_ms = 0.0
        self.profile = SeasonalProfile(period_ms=opts.season_ms, bins=opts.season_bins,
                                       memory_periods=opts.season_memory)
        self.offset = 0.0
        self.scale = 0.0
        self.offset_scale = 0.0
        self.run_shift = 0.0
        self.threshold = opts.new_threshold()
        # The drift chart is smooth and autocorrelated: its tail differs from the residual's, so its own.
        self.drift_threshold = opts.new_threshold()
        self.gate = EpisodeGate(opts.close_after)
        self.stuck = StuckRun(min_samples=opts.stuck_samples, improbability=opts.stuck_improbability)
        self.stuck_open = False

    @classmethod
    def factory(cls, options: Mapping[str, Any], where: str) -> Callable[[str, str], StreamDetector]:
        opts = RobustZScoreOptions.from_mapping(options, where)
        return lambda device, metric: cls(device, metric, opts)

    @classmethod
    def prepare(cls) -> None:
        """Compile (or load) the scoring kernel at start-up rather than on the first batch."""
        from coordinator.anomaly import zscore_kernel  # imports numba, when installed

        zscore_kernel.warm_up()

    # -- scoring (pure) ---------------------------------------------------------------------------

    def _floor(self, reference: float) -> float:
        # A metric that has never varied would otherwise score any change as infinite.
        return 1e-9 + 1e-6 * abs(reference)

    def _judge(self, time_ms: int, value: float) -> tuple[float, float, float, float, float]:
        """(deviation score, drift score, expected value, seasonal base, next offset)."""
        base = self.profile.value(time_ms)
        if base is None:
            base = value - self.offset
        expected = base + self.offset
        scale = max(self.scale, self._floor(expected))
        residual = value - expected
        deviation = abs(residual) / scale
        # The drift chart includes this sample (an EWMA statistic); its reference was learned before it.
        clipped = max(-self.opts.clip * scale, min(self.opts.clip * scale, residual))
        offset = self.offset + self.opts.level_alpha * clipped
        drift = abs(offset) / max(self.offset_scale, 0.05 * scale, self._floor(base))
        return deviation, drift, expected, base, offset

    def peek(self, time_ms: int, value: float) -> float:
        """The larger of the deviation and drift scores (each in robust sd of its own statistic)."""
        deviation, drift, *_ = self._judge(time_ms, value)
        return max(deviation, drift)

    # -- one sample -------------------------------------------------------------------------------

    def step(self, time_ms: int, value: float) -> Alert | None:
        if not math.isfinite(value):
            return None
        opts = self.opts
        self.dt_ms = sample_interval(self.dt_ms, self.last_ms, time_ms)
        self.last_ms = time_ms
        if self.first_ms is None:
            self.first_ms = time_ms
        self.n += 1
        warm = self.n > opts.warmup
        # The drift chart compares with the usual value for the time of day, unknown before a full period.
        seasoned = warm and time_ms - self.first_ms >= opts.season_ms

        deviation, drift, expected, base, offset = self._judge(time_ms, value)
        dev_threshold, drift_threshold = self.threshold.value, self.drift_threshold.value
        run = self.stuck.update(value)
        required = self.stuck.required

        alert: Alert | None = None
        if self.stuck_open and run == 1:
            self.stuck_open = False
        if warm and required is not None and run >= required and not self.stuck_open:
            self.stuck_open = True
            alert = self._stuck_alert(time_ms, value, run, required, expected, scale=self.scale,
                                      threshold=self.threshold.value)
        breach = warm and not self.stuck_open and (deviation > dev_threshold
                                                        or (seasoned and drift > drift_threshold))
        if self.gate.update(breach) and alert is None:
            alert = self._value_alert(time_ms, value, deviation, drift, expected, base, offset,
                                      scale=self.scale, threshold=self.threshold.value,
                                      drift_threshold=self.drift_threshold.value)

        self._learn(time_ms, value, breach, expected, base, offset, deviation, drift if seasoned else None)
        return alert

    def _learn(self, time_ms: int, value: float, breach: bool, expected: float, base: float,
               offset: float, deviation: float, drift: float | None) -> None:
        opts = self.opts
        self.offset = offset
        if self.stuck_open:
            return  # a frozen sensor teaches nothing about the metric
        if breach:
            # Average what the anomaly's offset is, so that a persisting one can be accepted as the new level.
            self.run_shift += (value - base - self.run_shift) / self.gate.breach_run
            if self.gate.breach_run >= opts.adapt_after:
                logger.debug("%s/%s: accepting a new level (%+.4g) after %d anomalous samples",
                             self.device, self.metric, self.run_shift, self.gate.breach_run)
                self.profile.shift(self.run_shift)
                self.offset = 0.0
                self.gate.breach_run = 0
                self.run_shift = 0.0
            return
        self.run_shift = 0.0
        scale = max(self.scale, self._floor(expected))
        residual = value - expected
        limit = opts.clip * scale if self.n > 2 else math.inf
        alpha = max(1.0 / self.n, opts.scale_alpha)
        self.scale += alpha * (_GAUSS_MAD * min(abs(residual), limit) - self.scale)
        # The drift chart's own spread learns ten times slower and clips harder than the residual's:
        # a drift in progress is exactly a slowly growing offset, and must not teach that it is normal.
        off_limit = 2.0 * self.offset_scale if self.n > opts.warmup else math.inf
        off_alpha = max(1.0 / self.n, opts.scale_alpha / 10)
        self.offset_scale += off_alpha * (_GAUSS_MAD * min(abs(offset), off_limit) - self.offset_scale)
        target = max(base - limit, min(base + limit, value))
        self.profile.learn(time_ms, target, rate=self.profile.sample_rate(self.dt_ms))
        if self.n > opts.warmup // 2:
            self.threshold.learn(deviation)
        if drift is not None:
            self.drift_threshold.learn(drift)

    # -- a run of samples (the ingest hot path) ---------------------------------------------------

    def step_many(self, times: Sequence[int], values: Sequence[float]) -> list[tuple[int, Alert]]:
        """:meth:`step` for each sample in order: the batch kernel for longer runs, else ``step`` itself.

        The kernel (:mod:`coordinator.anomaly.zscore_kernel`: compiled by numba
        when it is installed, plain Python otherwise) is bit-identical to
        ``step``; below ``_KERNEL_MIN_RUN`` samples packing the state for it
        costs more than it saves.
        """
        if len(times) >= _KERNEL_MIN_RUN:
            from coordinator.anomaly import zscore_kernel  # imports numba: only once a long run comes

            return zscore_kernel.run_kernel(self, times, values)
        return super().step_many(times, values)

    # -- alerts -----------------------------------------------------------------------------------

    def _severity(self, score: float, threshold: float) -> Severity:
        return Severity.CRITICAL if score >= self.opts.critical_ratio * threshold else Severity.WARNING

    # The builders take what they would read from self (scale, threshold values) as arguments:
    # the compiled kernel passes the numbers it had at the alerting sample.

    def _value_alert(self, time_ms: int, value: float, deviation: float, drift: float,
                     expected: float, base: float, offset: float, *, scale: float, threshold: float,
                     drift_threshold: float) -> Alert:
        scale = max(scale, self._floor(expected))
        if deviation / threshold >= drift / drift_threshold:
            kind, score = AlertKind.DEVIATION, deviation
            side = "above" if value > expected else "below"
            text = (f"value {_fmt(value)} is {deviation:.1f} robust sd {side} the expected "
                    f"{_fmt(expected)} ± {_fmt(scale)}")
            centre = expected
        else:
            kind, score, threshold = AlertKind.DRIFT, drift, drift_threshold
            side = "above" if offset > 0 else "below"
            text = (f"recent level {_fmt(base + offset)} has drifted {drift:.1f} sd {side} the usual "
                    f"{_fmt(base)} for this time")
            centre = base
        half = threshold * scale
        return Alert(device=self.device, metric=self.metric, time_ms=time_ms, value=value, score=score,
                     threshold=threshold, expected_low=centre - half, expected_high=centre + half,
                     explanation=text, severity=self._severity(score, threshold), kind=kind)

    def _stuck_alert(self, time_ms: int, value: float, run: int, required: int, expected: float, *,
                     scale: float, threshold: float) -> Alert:
        half = threshold * max(scale, self._floor(expected))
        return Alert(device=self.device, metric=self.metric, time_ms=time_ms, value=value, score=float(run),
                     threshold=float(required), expected_low=expected - half, expected_high=expected + half,
                     explanation=f"stuck at {_fmt(value)} for {run} samples", severity=Severity.WARNING,
                     kind=AlertKind.STUCK)

    # -- forecasts --------------------------------------------------------------------------------

    def forecast(self, horizon: int) -> list[ForecastPoint]:
        """Seasonal profile plus the current offset decaying toward it, ± ``forecast_z`` robust sd.

        The interval widens with the horizon as the offset's own uncertainty adds up.
        """
        if self.last_ms is None or horizon <= 0:
            return []
        dt = self.dt_ms or 1000.0
        points = []
        for k in range(1, horizon + 1):
            t = self.last_ms + round(k * dt)
            base = self.profile.value(t)
            base = self.profile.value(self.last_ms) if base is None else base
            centre = (base or 0.0) + self.offset * (1.0 - self.opts.level_alpha) ** k
            half = self.opts.forecast_z * math.hypot(self.scale, self.offset_scale * math.sqrt(k) * 0.5)
            points.append(ForecastPoint(time_ms=t, mean=centre, low=centre - half, high=centre + half))
        return points
