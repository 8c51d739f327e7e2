"""The anomaly record the coordinator publishes, stores and shows: one per episode."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Alert", "AlertKind", "Severity"]


class Severity(enum.StrEnum):
    """How loudly to report; ``critical`` may trigger a configured action."""

    WARNING = "warning"
    CRITICAL = "critical"


class AlertKind(enum.StrEnum):
    """What the detector saw, so an operator knows where to look first."""

    DEVIATION = "deviation"  # a sudden departure from the expected value (spike or level shift)
    DRIFT = "drift"  # the recent level crept away from the usual level for this time of day
    STUCK = "stuck"  # the same value for longer than this metric ever holds still
    MULTIVARIATE = "multivariate"  # an unusual combination of a device's metrics


@dataclass(frozen=True, slots=True)
class Alert:
    """The opening sample of one anomaly episode.

    ``score`` and ``threshold`` are on the detector's own scale (robust standard
    deviations for deviations and drifts, samples for stuck runs, a batch
    outlier score for multivariate alerts); ``score / threshold`` compares them
    within one stream. ``calibrated`` compares them across streams: a score in
    [0, 1] made from the estimated chance that the stream's normal data scores
    this high (:func:`~coordinator.anomaly.threshold.calibrated_score`: 0.5 is
    once in 10,000 samples, higher is rarer), so one threshold works across a
    fleet and alerts rank across devices; None from a detector that does not
    estimate it.
    """

    device: str
    metric: str
    time_ms: int
    value: float
    score: float
    threshold: float
    expected_low: float
    expected_high: float
    explanation: str
    severity: Severity
    kind: AlertKind
    calibrated: float | None = None

    def __post_init__(self) -> None:
        if not self.device or not self.metric:
            raise ValueError("an alert needs a device and a metric")
        for name in ("score", "threshold"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"alert {name} must be finite, not {getattr(self, name)!r}")
        if self.calibrated is not None and not 0.0 <= self.calibrated <= 1.0:
            raise ValueError(f"alert calibrated score must be in [0, 1], not {self.calibrated!r}")
        if self.expected_low > self.expected_high:
            raise ValueError(f"expected range is reversed: ({self.expected_low}, {self.expected_high})")

    @property
    def expected(self) -> tuple[float, float]:
        """The range the detector expected the value in, as ``(low, high)``."""
        return (self.expected_low, self.expected_high)

    def to_json_dict(self) -> dict[str, Any]:
        """The published payload of ``{root}/_anomaly/{device}/{metric}``."""
        return {
            "device": self.device,
            "metric": self.metric,
            "time_ms": self.time_ms,
            "value": self.value,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "expected": {"low": self.expected_low, "high": self.expected_high},
            "explanation": self.explanation,
            "severity": self.severity.value,
            "kind": self.kind.value,
            **({} if self.calibrated is None else {"calibrated": round(self.calibrated, 6)}),
        }
