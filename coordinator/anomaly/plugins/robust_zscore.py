"""The default online detector: robust z-scores against a seasonal baseline, adapted to the kind of series.

Each sample is judged before anything is learned from it:

* **deviation** — ``|x - expected| / scale``, where ``expected`` is the usual
  value at this time of day (a :class:`SeasonalProfile`) plus a fast offset
  that follows the recent level, and ``scale`` is an exponentially weighted
  mean absolute residual times 1.2533 (a robust standard deviation for
  Gaussian noise). Catches spikes and level shifts at their first sample.
  A second predictor, the local trend (``2 x[t-1] - x[t-2]``), keeps its own
  residual scale; when it explains the series far better (a noiseless or
  smooth periodic series whose period is not the profile's), the deviation is
  measured against it instead (``smooth``).
* **drift** — ``|offset| / offset_scale``: an EWMA control chart of how far
  the recent level sits from the usual one. Catches slow trends that the fast
  residual follows and never flags. It counts only when the offset is also at
  least ``drift_min_shift`` residual sd (evidence against the series' own
  variability: a noiseless series' chart is all phase error), and ``drift =
  false`` turns it off.

What is learned depends on the kind of series (:class:`SeriesShape`, learned
online, or fixed per metric with ``series``):

* every series has a resolution (its smallest step); the noise scale never
  goes below ``resolution_floor`` of it, so a quantised or mostly-constant
  series scores a step in steps, not in units of a scale near zero;
* a series of at most ``max_levels`` distinct values (a square wave, a state)
  also scores how far a value is off its known levels, so a switch between
  levels is ordinary and a value off them is not;
* a sparse series (mostly exact zeros: request, error or byte counters) is
  judged by its bursts instead (:class:`BurstRate`): a burst rate far above
  the usual, or a burst far beyond the usual sizes.

The largest applicable score is the score: unbounded, so a bigger anomaly
scores higher and alerts do not tie. A :class:`PeaksOverThreshold` threshold
adapts to each stream's own tail (on a continuous series also to its shape,
``tail_shape``: heavy-tailed noise gets a threshold further out instead of
alerting on its own tail) and gives every alert a calibrated score in
[0, 1]; an :class:`EpisodeGate` turns breaches into one alert per episode,
kept open while the anomaly lasts; a :class:`StuckRun` catches frozen sensors
(on constant-prone series, only runs far beyond their longest). Learning is
clipped (a spike moves nothing much) and frozen on breaching samples; after
``adapt_after`` consecutive breaches the detector accepts the new level by
shifting its profile, so a level shift alerts once and then goes quiet.

Per-stream state is a few dozen floats (with the default 24 profile bins and
8 levels).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from coordinator.anomaly.alert import Alert, AlertKind, Severity
from coordinator.anomaly.base import ForecastPoint, StreamDetector, register_detector, sample_interval
from coordinator.anomaly.bursts import MIN_LOG_SCALE, BurstRate
from coordinator.anomaly.options import (
    AlertingOptions,
    alerting_options,
    bool_option,
    check_keys,
    float_option,
    int_option,
    str_option,
)
from coordinator.anomaly.seasonal_profile import SeasonalProfile
from coordinator.anomaly.series_shape import CONTINUOUS, LEVELS, SERIES_KINDS, SPARSE, SeriesShape
from coordinator.anomaly.threshold import calibrated_score, tail_probability

__all__ = ["RobustZScoreDetector", "RobustZScoreOptions"]

logger = logging.getLogger(__name__)

_GAUSS_MAD = 1.2533  # E|N(0,1)| = 0.7979; dividing by it turns a mean absolute residual into an sd
_DAY_MS = 86_400_000
_KERNEL_MIN_RUN = 8  # shortest run step_many hands to the kernel (compiled, it breaks even at about 4)
#: The trend predictor judges a series once its residual scale is below this share of the profile's.
SMOOTH_RATIO = 0.5
_KIND_NAMES = {v: k for k, v in SERIES_KINDS.items()}
#: What a deviation was measured against (the alert says so).
BY_PROFILE, BY_TREND, BY_LEVELS, BY_BURSTS = 0, 1, 2, 3


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
    series: str = "auto"
    max_levels: int = 8
    resolution_floor: float = 0.5
    smooth: bool = True
    drift: bool = True
    drift_min_shift: float = 1.0

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
            series=str_option(where, options, "series", d.series, choices=set(SERIES_KINDS)),
            max_levels=int_option(where, options, "max_levels", d.max_levels, low=0, high=64),
            resolution_floor=float_option(where, options, "resolution_floor", d.resolution_floor, low=0,
                                          high=100),
            smooth=bool_option(where, options, "smooth", d.smooth),
            drift=bool_option(where, options, "drift", d.drift),
            drift_min_shift=float_option(where, options, "drift_min_shift", d.drift_min_shift, low=0,
                                         high=1000),
            **alerting_options(where, options, d),
        )


#: The thresholds' tails at an alerting sample: (u, mean excess, cluster rate, shape), deviation then drift.
Tails = tuple[float, float, float, float, float, float, float, float]


class _Judgement(NamedTuple):
    """What :meth:`RobustZScoreDetector._judge` saw in one sample, before learning from it."""

    deviation: float
    drift: float
    drifting: bool  # the drift score may breach (drift on and enough evidence)
    expected: float  # the profile's expected value (profile + offset)
    scale: float  # the profile residual's scale, floored
    base: float  # the profile's value for this time
    offset: float  # the offset after this sample
    recent: float  # the burst-rate chart after this sample
    kind: int  # the series kind it was judged as
    reason: int  # what the deviation was measured against (BY_PROFILE, BY_TREND, ...)
    centre: float  # the reason's centre: trend prediction, nearest level, log of the usual burst size
    spread: float  # the reason's scale: trend residual sd, resolution, log-size sd


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.4e}"


@register_detector
class RobustZScoreDetector(StreamDetector):
    """Seasonal robust z-score with drift chart, series shapes, stuck check, adaptive threshold and episodes.

    >>> det = RobustZScoreDetector("gw-1", "cpu", RobustZScoreOptions(warmup=50, season_ms=0))
    >>> alerts = [det.step(i * 1000, 40.0 + (i % 7) * 0.5) for i in range(200)]
    >>> any(alerts)
    False
    >>> alert = det.step(200_000, 95.0)
    >>> alert.kind.value, alert.score > alert.threshold, alert.calibrated > 0.5
    ('deviation', True, True)
    """

    TYPE = "robust_zscore"

    __slots__ = ("bursts", "calm_scale", "device", "drift_threshold", "dt_ms", "first_ms", "gate", "kind",
                 "last_ms", "metric", "n", "offset", "offset_scale", "opts", "profile", "run_shift", "scale",
                 "scale2", "series", "shape", "smooth_n", "stuck", "stuck_open", "threshold", "x1", "x2")

    def __init__(self, device: str, metric: str, opts: RobustZScoreOptions) -> None:
        self.device = device
        self.metric = metric
        self.opts = opts
        self.series = SERIES_KINDS[opts.series]
        self.kind = 0  # the kind of series it was judged as last (0 before the first sample)
        self.n = 0
        self.last_ms: int | None = None
        self.first_ms: int | None = None
        self.dt_ms = 0.0
        self.profile = SeasonalProfile(period_ms=opts.season_ms, bins=opts.season_bins,
                                       memory_periods=opts.season_memory)
        self.offset = 0.0
        self.scale = 0.0
        self.calm_scale = 0.0
        self.offset_scale = 0.0
        self.run_shift = 0.0
        self.threshold = opts.new_threshold()
        # The drift chart is smooth and autocorrelated: its tail differs from the residual's, so its own.
        self.drift_threshold = opts.new_threshold(shaped=False)
        # An episode's noise has settled only after the residual scale's memory (1 / scale_alpha samples).
        self.gate = opts.new_gate(min_calm=math.ceil(1.0 / opts.scale_alpha))
        self.stuck = opts.new_stuck()
        self.stuck_open = False
        self.shape = SeriesShape(opts.max_levels)
        self.bursts = BurstRate(alpha=opts.level_alpha, size_alpha=opts.scale_alpha)
        # The trend predictor: the last two values and its residual scale.
        self.x1 = math.nan
        self.x2 = math.nan
        self.scale2 = 0.0
        self.smooth_n = 0

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
        # A metric that has never varied would otherwise score any change as infinite; a quantised one
        # would score a single step as many sd.
        return max(1e-9 + 1e-6 * abs(reference), self.shape.floor(self.opts.resolution_floor))

    def _smooth(self) -> bool:
        """Whether the trend predictor judges this series (it explains it far better than the profile)."""
        return (self.opts.smooth and self.smooth_n >= self.opts.warmup // 2
                and self.scale2 < SMOOTH_RATIO * self.scale)

    def _shaped(self, j: _Judgement) -> bool:
        """Whether the deviation threshold fits its tail's shape for this sample: only while the deviation is
        a profile residual, which is noise. A burst's or a level's score is mostly exactly 0 (the moments of
        such a mixture say nothing about a tail); the trend predictor's residual on a smooth series is its
        own error, not noise, and a shape fitted to it would only flatten the calibrated scores."""
        return self.opts.tail_shape and j.kind == CONTINUOUS and j.reason == BY_PROFILE

    def _judge(self, time_ms: int, value: float) -> _Judgement:
        opts = self.opts
        base = self.profile.value(time_ms)
        if base is None:
            base = value - self.offset
        expected = base + self.offset
        floor = self._floor(expected)
        scale = max(self.scale, floor)
        residual = value - expected
        deviation = abs(residual) / scale
        # The drift chart includes this sample (an EWMA statistic); its reference was learned before it.
        clipped = max(-opts.clip * scale, min(opts.clip * scale, residual))
        offset = self.offset + opts.level_alpha * clipped
        drift = abs(offset) / max(self.offset_scale, 0.05 * scale, self._floor(base))
        drifting = opts.drift and abs(offset) >= opts.drift_min_shift * scale
        reason, centre, spread = BY_PROFILE, expected, scale
        kind = self.shape.kind(self.series, self.kind)
        recent = self.bursts.recent
        if opts.resolution_floor > 0.0 and not self.shape.resolution < math.inf:
            # A series that has never varied has no scale to judge a change by: its first change teaches one.
            deviation = 0.0
            drifting = False
        elif kind == SPARSE:
            # A burst's size is the deviation; the burst-rate chart takes the drift chart's place (and its
            # threshold: its tail is a chart's, not a burst's).
            drift, deviation, recent = self.bursts.judge(value)
            reason, centre = BY_BURSTS, self.bursts.log_mean
            spread = max(self.bursts.log_scale, MIN_LOG_SCALE)
            drifting = True
        elif kind == LEVELS:
            # Steps between known levels are what such a series does; a value off them is not.
            deviation, reason = self.shape.novelty(value), BY_LEVELS
            centre, spread = self.shape.nearest(value), self.shape.resolution
            drifting = False
        elif self._smooth():
            centre = 2.0 * self.x1 - self.x2
            spread = max(self.scale2, floor)
            deviation, reason = abs(value - centre) / spread, BY_TREND
        return _Judgement(deviation, drift, drifting, expected, scale, base, offset, recent, kind, reason,
                          centre, spread)

    def peek(self, time_ms: int, value: float) -> float:
        """The larger of the deviation and (when it counts) drift scores, each on its own robust-sd scale."""
        j = self._judge(time_ms, value)
        return max(j.deviation, j.drift) if j.drifting else j.deviation

    def peek_calibrated(self, time_ms: int, value: float) -> float:
        j = self._judge(time_ms, value)
        tail = self.threshold.tail(j.deviation)
        if j.drifting:
            tail = min(tail, self.drift_threshold.tail(j.drift))
        return calibrated_score(tail)

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

        j = self._judge(time_ms, value)
        th, dr = self.threshold, self.drift_threshold
        th.shaped = self._shaped(j)
        dev_threshold, drift_threshold = th.value, dr.value
        run = self.stuck.update(value, self.stuck_open)
        required = self.stuck.required(sparse=j.kind == SPARSE, seasoned=seasoned)

        alert: Alert | None = None
        if self.stuck_open and run == 1:
            self.stuck_open = False
        if warm and required is not None and run >= required and not self.stuck_open:
            self.stuck_open = True
            alert = self._stuck_alert(time_ms, value, run, required, j.expected, scale=j.scale,
                                      threshold=dev_threshold)
        breach = warm and not self.stuck_open and (j.deviation > dev_threshold
                                                   or (seasoned and j.drifting and j.drift > drift_threshold))
        noise = j.scale / max(self.calm_scale, self._floor(j.expected)) if j.kind == CONTINUOUS else 1.0
        # How far along its threshold the drift chart is: an episode stays open while the level still moves.
        moving = j.drift / drift_threshold if j.kind == CONTINUOUS and seasoned and j.drifting else 0.0
        if self.gate.update(breach, noise, moving) and alert is None:
            alert = self._value_alert(time_ms, value, j.deviation, j.drift, j.expected, j.base, j.offset,
                                      scale=j.scale, threshold=dev_threshold, drift_threshold=drift_threshold,
                                      reason=j.reason, centre=j.centre, spread=j.spread,
                                      recent=j.recent, rate=self.bursts.rate,
                                      tails=(th.u, th.mean_excess, th.cluster_rate, th.shape, dr.u,
                                             dr.mean_excess, dr.cluster_rate, dr.shape))

        self._learn(time_ms, value, breach, j, j.drift if seasoned else None)
        return alert

    def _learn(self, time_ms: int, value: float, breach: bool, j: _Judgement, drift: float | None) -> None:
        opts = self.opts
        if j.kind != self.kind:
            if self.kind:  # scores of another kind: what the threshold learned of them says nothing now
                logger.debug("%s/%s: judged as a %s series from now on", self.device, self.metric,
                             _KIND_NAMES[j.kind])
                self.threshold = opts.new_threshold()
                self.threshold.shaped = self._shaped(j)
            self.kind = j.kind
        self.offset = j.offset
        self.bursts.recent = j.recent
        # The trend predictor's past is every sample: after a level shift the new level is its past.
        x1, x2 = self.x1, self.x2
        self.x1, self.x2 = float(value), x1
        if self.stuck_open:
            return  # a frozen sensor teaches nothing about the metric
        self.bursts.learn_rate(value, j.recent, clip=opts.clip)
        if breach:
            if j.kind == LEVELS and self.stuck.run > 1:
                self.shape.learn(float(value))  # a new value that holds is a new level: alerted once
            # Average what the anomaly's offset is, so that a persisting one can be accepted as the new level.
            self.run_shift += (value - j.base - self.run_shift) / self.gate.breach_run
            if self.gate.breach_run >= opts.adapt_after:
                logger.debug("%s/%s: accepting a new level (%+.4g) after %d anomalous samples",
                             self.device, self.metric, self.run_shift, self.gate.breach_run)
                self.profile.shift(self.run_shift)
                self.offset = 0.0
                self.gate.breach_run = 0
                self.run_shift = 0.0
                self.shape.learn(float(value))  # a series of levels has a new one
            return
        self.run_shift = 0.0
        floor = self._floor(j.expected)
        scale = max(self.scale, floor)
        residual = value - j.expected
        limit = opts.clip * scale if self.n > 2 else math.inf
        alpha = max(1.0 / self.n, opts.scale_alpha)
        self.scale += alpha * (_GAUSS_MAD * min(abs(residual), limit) - self.scale)
        if not self.gate.is_open:  # the usual noise: what the stream is like between episodes, learned slowly
            alpha = max(1.0 / self.n, opts.scale_alpha / 10)
            self.calm_scale += alpha * (_GAUSS_MAD * min(abs(residual), limit) - self.calm_scale)
        # The drift chart's own spread learns ten times slower and clips harder than the residual's:
        # a drift in progress is exactly a slowly growing offset, and must not teach that it is normal.
        off_limit = 2.0 * self.offset_scale if self.n > opts.warmup else math.inf
        off_alpha = max(1.0 / self.n, opts.scale_alpha / 10)
        self.offset_scale += off_alpha * (_GAUSS_MAD * min(abs(j.offset), off_limit) - self.offset_scale)
        target = max(j.base - limit, min(j.base + limit, value))
        self.profile.learn(time_ms, target, rate=self.profile.sample_rate(self.dt_ms))
        if not math.isnan(x2):
            trend_residual = abs(value - (2.0 * x1 - x2))
            trend_limit = opts.clip * max(self.scale2, floor) if self.smooth_n > 2 else math.inf
            self.smooth_n = min(self.smooth_n + 1, 1_000_000)
            alpha = max(1.0 / self.smooth_n, opts.scale_alpha)
            self.scale2 += alpha * (_GAUSS_MAD * min(trend_residual, trend_limit) - self.scale2)
        self.bursts.learn_size(value, clip=opts.clip)
        self.stuck.learn()
        self.shape.learn(float(value))
        # Inside an episode that follows the anomaly (close_span), the scores are the anomaly's.
        frozen = opts.close_span > 0.0 and self.gate.is_open
        if self.n > opts.warmup // 2 and not frozen:
            self.threshold.learn(j.deviation)
        if drift is not None and not frozen:
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

    # The builders take what they would read from self (scales, threshold states, the series' shape) as
    # arguments: the compiled kernel passes the numbers it had at the alerting sample. ``scale`` is floored.

    def _value_alert(self, time_ms: int, value: float, deviation: float, drift: float,
                     expected: float, base: float, offset: float, *, scale: float, threshold: float,
                     drift_threshold: float, reason: int, centre: float, spread: float, recent: float,
                     rate: float, tails: Tails) -> Alert:
        risk = self.opts.risk
        bursts = reason == BY_BURSTS
        # Outside the log-size scale's range a burst's "largest usual size" is not a number.
        largest = math.exp(min(centre + threshold * spread, 709.0)) if bursts else 0.0
        if deviation / threshold >= drift / drift_threshold:
            kind, score = AlertKind.DEVIATION, deviation
            tail = tail_probability(score, tails[0], tails[1], tails[2], risk, tails[3])
            if reason == BY_TREND:
                side = "above" if value > centre else "below"
                text = (f"value {_fmt(value)} is {deviation:.1f} robust sd {side} the {_fmt(centre)} its "
                        f"recent trend predicts (± {_fmt(spread)})")
                low, high = centre - threshold * spread, centre + threshold * spread
            elif reason == BY_LEVELS:
                text = (f"value {_fmt(value)} is unlike the levels and steps this metric takes "
                        f"({deviation:.1f}; nearest level {_fmt(centre)}, steps of {_fmt(spread)})")
                low = high = centre
            elif bursts:
                text = (f"burst of {_fmt(value)} is {deviation:.1f} sd above the usual burst size "
                        f"{_fmt(math.exp(centre))} (on the log scale)")
                low, high = min(0.0, value), max(0.0, largest)
            else:
                side = "above" if value > expected else "below"
                text = (f"value {_fmt(value)} is {deviation:.1f} robust sd {side} the expected "
                        f"{_fmt(expected)} ± {_fmt(scale)}")
                low, high = expected - threshold * scale, expected + threshold * scale
        elif bursts:  # the burst-rate chart: a storm is a sudden departure, whatever chart caught it
            kind, score, threshold = AlertKind.DEVIATION, drift, drift_threshold
            tail = tail_probability(score, tails[4], tails[5], tails[6], risk, tails[7])
            text = (f"bursts in {100 * recent:.0f}% of recent samples against the usual {100 * rate:.1f}% "
                    f"({drift:.1f} sd above)")
            low, high = min(0.0, value), max(0.0, largest)
        else:
            kind, score, threshold = AlertKind.DRIFT, drift, drift_threshold
            tail = tail_probability(score, tails[4], tails[5], tails[6], risk, tails[7])
            side = "above" if offset > 0 else "below"
            text = (f"recent level {_fmt(base + offset)} has drifted {drift:.1f} sd {side} the usual "
                    f"{_fmt(base)} for this time")
            low, high = base - threshold * scale, base + threshold * scale
        return Alert(device=self.device, metric=self.metric, time_ms=time_ms, value=value, score=score,
                     threshold=threshold, expected_low=low, expected_high=high, explanation=text,
                     severity=self._severity(score, threshold), kind=kind, calibrated=calibrated_score(tail))

    def _stuck_alert(self, time_ms: int, value: float, run: int, required: int, expected: float, *,
                     scale: float, threshold: float) -> Alert:
        half = threshold * scale
        return Alert(device=self.device, metric=self.metric, time_ms=time_ms, value=value, score=float(run),
                     threshold=float(required), expected_low=expected - half, expected_high=expected + half,
                     explanation=f"stuck at {_fmt(value)} for {run} samples", severity=Severity.WARNING,
                     kind=AlertKind.STUCK, calibrated=calibrated_score(self.stuck.tail(run, required)))

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
