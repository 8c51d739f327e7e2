"""A river-backed online detector: Holt's linear forecaster, scored by its one-step residual.

``type = "river_holt"`` in ``[anomaly.detector]`` (needs ``pip install 'edgebus[river]'``).
Per stream, river's :class:`~river.time_series.HoltWinters` (level and trend,
no season) forecasts the next sample; river's :class:`~river.stats.EWMean`
follows the mean absolute one-step residual. Each sample is scored before it is
learned:

    score = |x - forecast| / (1.2533 * mean |residual|)

an unsaturated robust z-score (river's own ``PredictiveAnomalyDetection`` clips
its score at 1.0, which ties every large anomaly and floods alerts; this one
does not). The threshold adapts to each stream's tail
(:class:`PeaksOverThreshold`), one alert is raised per episode
(:class:`EpisodeGate`) and frozen sensors are caught by :class:`StuckRun`,
exactly as the default detector does. Learning is winsorised (a spike moves the
forecaster by at most ``clip`` residual scales) and after ``adapt_after``
consecutive breaches the forecaster is re-seeded at the new level, so a level
shift alerts once. Forecasts for the live view come from the same model, with
an interval of ``forecast_z`` residual scales widening with the horizon.

It trades the default's time-of-day profile for a trend: better on streams
that ramp, worse on daily cycles. ``bench/anomaly.py`` scores both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from river import stats, time_series

from coordinator.anomaly.alert import Alert, AlertKind, Severity
from coordinator.anomaly.base import ForecastPoint, StreamDetector, register_detector, sample_interval
from coordinator.anomaly.options import (
    AlertingOptions,
    alerting_options,
    check_keys,
    float_option,
    int_option,
)
from coordinator.anomaly.threshold import calibrated_score

__all__ = ["RiverHoltDetector", "RiverHoltOptions"]

_GAUSS_MAD = 1.2533  # mean absolute deviation -> standard deviation for Gaussian noise
_SEED = 3  # river's HoltWinters forecasts only after it has seen this many samples
# river ships no type hints: its forecaster is used through Any.
_HOLT: Any = time_series.HoltWinters


@dataclass(frozen=True, slots=True)
class RiverHoltOptions(AlertingOptions):
    """The ``[anomaly.detector]`` table for ``type = "river_holt"``."""

    warmup: int = 120
    alpha: float = 0.3
    beta: float = 0.01
    scale_alpha: float = 0.02
    clip: float = 4.0

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], where: str) -> RiverHoltOptions:
        """Validate an operator's table; an unknown or out-of-range key raises ConfigError naming it."""
        check_keys(where, options, set(cls.__dataclass_fields__))
        d = cls()

        def unit(key: str, default: float) -> float:
            return float_option(where, options, key, default, low=0, high=1, low_open=True)

        return cls(
            warmup=int_option(where, options, "warmup", d.warmup, low=_SEED + 2, high=10_000_000),
            alpha=unit("alpha", d.alpha), beta=unit("beta", d.beta),
            scale_alpha=unit("scale_alpha", d.scale_alpha),
            clip=float_option(where, options, "clip", d.clip, low=1, high=100),
            **alerting_options(where, options, d),
        )


@register_detector
class RiverHoltDetector(StreamDetector):
    """Holt forecast residuals (river) with adaptive threshold, episodes and a stuck check.

    >>> det = RiverHoltDetector("gw-1", "cpu", RiverHoltOptions(warmup=50))
    >>> any(det.step(i * 1000, 40.0 + (i * 7 % 11 - 5) * 0.3) for i in range(200))
    False
    >>> alert = det.step(200_000, 95.0)
    >>> alert.kind.value, alert.score > alert.threshold
    ('deviation', True)
    """

    TYPE = "river_holt"

    def __init__(self, device: str, metric: str, opts: RiverHoltOptions) -> None:
        self.device = device
        self.metric = metric
        self.opts = opts
        self.n = 0
        self.dt_ms = 0.0
        self.last_ms: int | None = None
        self.model: Any = self._new_model()
        self.abs_residual = stats.EWMean(fading_factor=opts.scale_alpha)
        self.threshold = opts.new_threshold()
        self.gate = opts.new_gate()
        self.stuck = opts.new_stuck()
        self.stuck_open = False
        self.run_mean = 0.0

    def _new_model(self) -> Any:
        return _HOLT(alpha=self.opts.alpha, beta=self.opts.beta)

    @classmethod
    def factory(cls, options: Mapping[str, Any], where: str) -> Callable[[str, str], StreamDetector]:
        opts = RiverHoltOptions.from_mapping(options, where)
        return lambda device, metric: cls(device, metric, opts)

    # -- scoring (pure) ---------------------------------------------------------------------------

    def _expected(self, value: float) -> float:
        """The one-step forecast; the value itself until the forecaster is seeded."""
        if self.n < _SEED:
            return value
        return float(self.model.forecast(1)[0])

    def _scale(self, reference: float) -> float:
        # A stream that never varied would otherwise score any change as infinite.
        return max(_GAUSS_MAD * self.abs_residual.get(), 1e-9 + 1e-6 * abs(reference))

    def peek(self, time_ms: int, value: float) -> float:
        expected = self._expected(value)
        return abs(value - expected) / self._scale(expected)

    def peek_calibrated(self, time_ms: int, value: float) -> float:
        return calibrated_score(self.threshold.tail(self.peek(time_ms, value)))

    # -- one sample -------------------------------------------------------------------------------

    def step(self, time_ms: int, value: float) -> Alert | None:
        if not math.isfinite(value):
            return None
        opts = self.opts
        self.dt_ms = sample_interval(self.dt_ms, self.last_ms, time_ms)
        self.last_ms = time_ms
        expected = self._expected(value)
        scale = self._scale(expected)
        residual = value - expected
        score = abs(residual) / scale
        self.n += 1
        warm = self.n > opts.warmup
        threshold = self.threshold.value
        run = self.stuck.update(value, self.stuck_open)
        required = self.stuck.required()

        alert: Alert | None = None
        if self.stuck_open and run == 1:
            self.stuck_open = False
        if warm and required is not None and run >= required and not self.stuck_open:
            self.stuck_open = True
            alert = self._alert(AlertKind.STUCK, time_ms, value, float(run), float(required), expected, scale,
                                f"{self.metric} has repeated {value:.4g} for {run} samples "
                                f"(at least {required} is improbable here)", self.stuck.tail(run, required))
        breach = warm and not self.stuck_open and score > threshold
        if self.gate.update(breach) and alert is None:
            alert = self._alert(AlertKind.DEVIATION, time_ms, value, score, threshold, expected, scale,
                                f"{self.metric} = {value:.4g}, forecast {expected:.4g} ± {scale:.3g} "
                                f"(river Holt, {score:.1f} residual sd)", self.threshold.tail(score))
        self._learn(value, expected, scale, residual, score, breach)
        return alert

    def _learn(self, value: float, expected: float, scale: float, residual: float, score: float,
               breach: bool) -> None:
        opts = self.opts
        if self.stuck_open:
            return  # a frozen sensor teaches nothing about the metric
        if breach:
            self.run_mean += (value - self.run_mean) / self.gate.breach_run
            if self.gate.breach_run >= opts.adapt_after:
                # A persisting change is the new level: re-seed the forecaster there.
                level = self.run_mean
                self.model = self._new_model()
                for _ in range(_SEED):
                    self.model.learn_one(level)
                self.gate.breach_run = 0
                self.run_mean = 0.0
            return
        self.run_mean = 0.0
        self.stuck.learn()
        # Winsorise only once the residual scale means something (after half the warm-up).
        limit = opts.clip * scale if self.n > opts.warmup // 2 else math.inf
        self.model.learn_one(expected + max(-limit, min(limit, residual)))
        if self.n > _SEED:
            self.abs_residual.update(min(abs(residual), limit))
        if self.n > opts.warmup // 2:
            self.threshold.learn(score)

    def _alert(self, kind: AlertKind, time_ms: int, value: float, score: float, threshold: float,
               expected: float, scale: float, explanation: str, tail: float) -> Alert:
        width = threshold * scale if kind is AlertKind.DEVIATION else scale
        severity = (Severity.CRITICAL if kind is AlertKind.DEVIATION and score >= self.opts.critical_ratio
                    * threshold else Severity.WARNING)
        return Alert(device=self.device, metric=self.metric, time_ms=time_ms, value=value, score=score,
                     threshold=threshold, expected_low=expected - width, expected_high=expected + width,
                     explanation=explanation, severity=severity, kind=kind, calibrated=calibrated_score(tail))

    def forecast(self, horizon: int) -> list[ForecastPoint]:
        if self.n < _SEED or self.last_ms is None or horizon < 1:
            return []
        means = self.model.forecast(horizon)
        scale = self._scale(means[0])
        step = self.dt_ms or 1000.0
        return [ForecastPoint(time_ms=int(self.last_ms + (h + 1) * step), mean=float(m),
                              low=float(m) - self.opts.forecast_z * scale * math.sqrt(h + 1),
                              high=float(m) + self.opts.forecast_z * scale * math.sqrt(h + 1))
                for h, m in enumerate(means)]
