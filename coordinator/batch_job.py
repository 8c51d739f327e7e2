"""The periodic multivariate check: pyod's :class:`BatchDetector` over each device's stored history.

Configuration (``[anomaly.batch]``; every key optional)::

    enabled = true        # false: no periodic batch detection
    interval_s = 300      # how often each device's window is examined
    window_s = 3600       # how much recent history each run reads from the store
    type = "mcd"          # ... and the rest of BatchDetector's keys (coordinator/anomaly/batch.py)

Each run reads every known device's metrics over the window, aligns them by
sample time (rows lacking any of the device's metrics are left out), and
reports only rows newer than the previous run's newest row, so an episode is
not reported again by the next run over an overlapping window. A device is
examined only once it has ``ROWS_PER_METRIC`` rows per metric (and the
detector's ``min_rows``): fewer rows than that and the robust covariance of
eight metrics flags plain noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.anomaly.alert import Alert
from coordinator.anomaly.batch import BatchDetector, BatchRow
from coordinator.anomaly.options import check_keys, float_option
from coordinator.store.base import Store
from schemas.errors import ConfigError

__all__ = ["BatchJob", "BatchJobConfig"]

logger = logging.getLogger(__name__)

_WHERE = "anomaly.batch"
ROWS_PER_METRIC = 15
_OWN_KEYS = {"enabled", "interval_s", "window_s"}
_DETECTOR_KEYS = {"type", "threshold_sd", "min_rows", "critical_ratio"}


@dataclass(frozen=True, slots=True)
class BatchJobConfig:
    """``[anomaly.batch]``: the schedule and window, plus the detector's own table."""

    enabled: bool = True
    interval_s: float = 300.0
    window_s: float = 3600.0
    detector: Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any] | None) -> BatchJobConfig:
        table = table or {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"{_WHERE} must be a table ([{_WHERE}])")
        check_keys(_WHERE, table, _OWN_KEYS | _DETECTOR_KEYS)
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{_WHERE}: enabled must be true or false, not {enabled!r}")
        interval = float_option(_WHERE, table, "interval_s", 300.0, low=1.0, high=7 * 86400.0)
        window = float_option(_WHERE, table, "window_s", 3600.0, low=10.0, high=30 * 86400.0)
        detector = {k: v for k, v in table.items() if k in _DETECTOR_KEYS}
        return cls(enabled=enabled, interval_s=interval, window_s=window, detector=detector)


def aligned_rows(store: Store, device: str, metrics: set[str], since_ms: int,
                 until_ms: int) -> list[BatchRow]:
    """The device's samples in ``[since_ms, until_ms]`` as rows by time; rows missing a metric are dropped."""
    by_time: dict[int, dict[str, float]] = {}
    for metric in sorted(metrics):
        for sample in store.samples(device, metric, since_ms=since_ms, until_ms=until_ms):
            by_time.setdefault(sample.time_ms, {})[metric] = float(sample.value)
    present = {m for values in by_time.values() for m in values}
    return [BatchRow(t, values) for t, values in sorted(by_time.items()) if len(values) == len(present)]


class BatchJob:
    """One run = every device's window through the detector; alerts go to ``report``."""

    def __init__(self, config: BatchJobConfig, store: Store,
                 metric_names: Callable[[], Mapping[str, set[str]]],
                 report: Callable[[list[Alert]], None], wall_clock_ms: Callable[[], int]) -> None:
        self.config = config
        self.detector = BatchDetector(config.detector)
        self.store = store
        self._metric_names = metric_names
        self._report = report
        self._now_ms = wall_clock_ms
        #: Per device, the newest row time already examined (alerts only for newer rows).
        self.scored_until: dict[str, int] = {}
        self.runs = 0
        self.alerts = 0

    def __call__(self) -> list[Alert]:
        now_ms = self._now_ms()
        since_ms = now_ms - round(self.config.window_s * 1000)
        alerts: list[Alert] = []
        devices = self._metric_names()
        examined = 0
        for device, metrics in sorted(devices.items()):
            if len(metrics) < 2:
                continue
            rows = aligned_rows(self.store, device, set(metrics), since_ms, now_ms)
            if len(rows) < max(self.detector.min_rows, ROWS_PER_METRIC * len(metrics)):
                continue
            examined += 1
            alerts += self.detector.fit_score(device, rows, since_ms=self.scored_until.get(device))
            self.scored_until[device] = rows[-1].time_ms
        self.runs += 1
        self.alerts += len(alerts)
        logger.info("batch anomaly run %d: %d of %d devices had enough history; %d alerts", self.runs,
                    examined, len(devices), len(alerts))
        if alerts:
            self._report(alerts)
        return alerts
