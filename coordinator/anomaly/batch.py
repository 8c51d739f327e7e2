"""The periodic multivariate detector: a pyod model over one device's recent metric vectors.

Per-metric detectors cannot see a broken relation between metrics (CPU busy
while the network is silent, each value ordinary on its own). Every few
minutes the coordinator hands this class a window of a device's aligned
samples; it standardises each metric robustly, fits the configured pyod model
on the window and flags rows whose outlier score is far above the window's
typical score (an alert's calibrated score comes from an exponential tail
fitted to the window's scores above their median). pyod is optional:
choosing this detector without it installed is a ConfigError that says how
to install it.

Configuration (``[anomaly.batch]``; every key optional)::

    type = "mcd"          # "mcd" (robust Mahalanobis; sees broken correlations), "ecod", "iforest"
    threshold_sd = 15.0   # flag scores this many robust sd above the window's median score
                          # (default 15 for mcd, whose squared distances have a long tail; 6 otherwise)
    min_rows = 50         # below this many rows there is nothing to compare with
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coordinator.anomaly.alert import Alert, AlertKind, Severity
from coordinator.anomaly.options import check_keys, float_option, int_option, str_option
from coordinator.anomaly.threshold import calibrated_score
from schemas.errors import ConfigError

__all__ = ["BatchDetector", "BatchRow"]

logger = logging.getLogger(__name__)

_MODELS = {"mcd": ("pyod.models.mcd", "MCD"), "ecod": ("pyod.models.ecod", "ECOD"),
           "iforest": ("pyod.models.iforest", "IForest")}
_SEEDED = {"mcd", "iforest"}
_DEFAULT_SD = {"mcd": 15.0}


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One instant of a device: its metrics' values at ``time_ms`` (aligned by the caller)."""

    time_ms: int
    values: Mapping[str, float]


class BatchDetector:
    """Finds rows of a device's metric window that are unusual as a combination."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        where = "anomaly.batch"
        config = config or {}
        check_keys(where, config, {"type", "threshold_sd", "min_rows", "critical_ratio"})
        self.kind = str_option(where, config, "type", "mcd", choices=set(_MODELS))
        default_sd = _DEFAULT_SD.get(self.kind, 6.0)
        self.threshold_sd = float_option(where, config, "threshold_sd", default_sd, low=1.0, high=1e6)
        self.min_rows = int_option(where, config, "min_rows", 50, low=10, high=10_000_000)
        self.critical_ratio = float_option(where, config, "critical_ratio", 2.0, low=1.0, high=1e6)
        module, name = _MODELS[self.kind]
        try:
            self._model_class = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise ConfigError(f"{where}.type = {self.kind!r} needs pyod: pip install 'edgebus[coordinator]'"
                              ) from exc

    def fit_score(self, device: str, rows: Sequence[BatchRow], *, since_ms: int | None = None) -> list[Alert]:
        """Alerts for unusual rows newer than ``since_ms``; one per run of consecutive unusual rows.

        Metrics missing from some rows, or constant over the window, are left out.
        """
        metrics = sorted({m for row in rows for m in row.values})
        metrics = [m for m in metrics if all(math.isfinite(row.values.get(m, math.nan)) for row in rows)]
        if len(rows) < self.min_rows or len(metrics) < 2:
            return []
        data = np.array([[row.values[m] for m in metrics] for row in rows], dtype=float)
        centre = np.median(data, axis=0)
        spread = 1.4826 * np.median(np.abs(data - centre), axis=0)
        keep = spread > 0
        if keep.sum() < 2:
            return []
        metrics = [m for m, k in zip(metrics, keep, strict=True) if k]
        z = (data[:, keep] - centre[keep]) / spread[keep]
        model = self._model_class(random_state=0) if self.kind in _SEEDED else self._model_class()
        model.fit(z)
        scores = np.asarray(model.decision_scores_, dtype=float)
        median = float(np.median(scores))
        mad = max(1.4826 * float(np.median(np.abs(scores - median))), 1e-12)
        robust = (scores - median) / mad
        # An exponential tail fitted to the rows above the median: what the calibrated score is made from.
        above = robust[robust > 0]
        tail_width = float(above.mean()) if len(above) else 1.0
        alerts: list[Alert] = []
        previous_flagged = False
        for index, row in enumerate(rows):
            flagged = bool(robust[index] > self.threshold_sd)
            opens = flagged and not previous_flagged
            previous_flagged = flagged
            if not opens or (since_ms is not None and row.time_ms <= since_ms):
                continue
            tail = 0.5 * math.exp(-float(robust[index]) / tail_width)
            alerts.append(self._alert(device, row, metrics, z[index], float(robust[index]), tail))
        logger.debug("batch %s over %s: %d rows, %d metrics, %d alerts", self.kind, device, len(rows),
                     len(metrics), len(alerts))
        return alerts

    def _alert(self, device: str, row: BatchRow, metrics: list[str], z: np.ndarray, score: float,
               tail: float) -> Alert:
        order = np.argsort(-np.abs(z))[:3]
        parts = ", ".join(f"{metrics[i]} {row.values[metrics[i]]:.4g} ({z[i]:+.1f} sd)" for i in order)
        severity = Severity.CRITICAL if score >= self.critical_ratio * self.threshold_sd else Severity.WARNING
        return Alert(device=device, metric="+".join(metrics), time_ms=row.time_ms, value=score, score=score,
                     threshold=self.threshold_sd, expected_low=-self.threshold_sd,
                     expected_high=self.threshold_sd,
                     explanation=f"unusual combination: {parts} ({score:.1f} robust sd above this "
                                 f"device's typical {self.kind} score)",
                     severity=severity, kind=AlertKind.MULTIVARIATE, calibrated=calibrated_score(tail))
