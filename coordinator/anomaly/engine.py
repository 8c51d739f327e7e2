"""Routes samples to one online detector per (device, metric) and collects their alerts.

Configuration (the ``[anomaly]`` table; every key optional)::

    [anomaly.detector]          # the default for every metric
    type = "robust_zscore"      # see detector_types()
    warmup = 120

    [anomaly.metrics.battery]   # a metric that needs different settings
    type = "robust_zscore"
    season_ms = 0

The engine does no I/O: the caller publishes and stores the alerts and writes
:meth:`AnomalyEngine.checkpoint` wherever it keeps state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import DEFAULT_TYPE, ForecastPoint, StreamDetector, create_factory
from coordinator.anomaly.checkpoint import decode_checkpoint, encode_checkpoint
from coordinator.anomaly.options import check_keys
from schemas.errors import CodecError, ConfigError

__all__ = ["AnomalyEngine", "Sample"]

logger = logging.getLogger(__name__)

#: ``(device, metric, time_ms, value)``
Sample = tuple[str, str, int, float]

_KNOWN = {"detector", "metrics"}


def _table(where: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table ([{where}])")
    return value


class AnomalyEngine:
    """Online anomaly detection and forecasts for every metric stream of a fleet.

    >>> engine = AnomalyEngine()
    >>> [engine.observe("gw-1", "cpu", i * 1000, 40.0 + i % 5) for i in range(3)]
    [[], [], []]
    >>> engine.stream_count
    1
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = _table("anomaly", config)
        check_keys("anomaly", config, _KNOWN)
        self._default = create_factory(_table("anomaly.detector", config.get("detector")), "anomaly.detector")
        self._per_metric: dict[str, Callable[[str, str], StreamDetector]] = {}
        for metric, table in _table("anomaly.metrics", config.get("metrics")).items():
            where = f"anomaly.metrics.{metric}"
            self._per_metric[metric] = create_factory(_table(where, table), where)
        self._streams: dict[tuple[str, str], StreamDetector] = {}

    @property
    def stream_count(self) -> int:
        """How many (device, metric) streams have a detector."""
        return len(self._streams)

    def detector(self, device: str, metric: str) -> StreamDetector:
        """The stream's detector, created on its first sample."""
        key = (device, metric)
        detector = self._streams.get(key)
        if detector is None:
            detector = self._per_metric.get(metric, self._default)(device, metric)
            self._streams[key] = detector
        return detector

    def observe(self, device: str, metric: str, time_ms: int, value: float) -> list[Alert]:
        """Score one sample (then learn from it); the alerts it opens, usually none."""
        alert = self.detector(device, metric).step(time_ms, value)
        if alert is None:
            return []
        logger.info("anomaly %s/%s: %s", device, metric, alert.explanation)
        return [alert]

    def observe_many(self, samples: Iterable[Sample]) -> list[Alert]:
        """Score a batch of samples in order; the alerts they open."""
        alerts: list[Alert] = []
        streams = self._streams
        for device, metric, time_ms, value in samples:
            detector = streams.get((device, metric)) or self.detector(device, metric)
            alert = detector.step(time_ms, value)
            if alert is not None:
                logger.info("anomaly %s/%s: %s", device, metric, alert.explanation)
                alerts.append(alert)
        return alerts

    def forecast(self, device: str, metric: str, horizon: int) -> list[ForecastPoint]:
        """The stream's next ``horizon`` samples as (time_ms, mean, low, high); empty if unseen."""
        detector = self._streams.get((device, metric))
        return [] if detector is None else detector.forecast(horizon)

    def forget(self, device: str) -> int:
        """Drop every detector of a decommissioned device; how many were dropped."""
        keys = [key for key in self._streams if key[0] == device]
        for key in keys:
            del self._streams[key]
        return len(keys)

    def checkpoint(self) -> bytes:
        """All detector state, to be handed back to :meth:`restore` after a restart."""
        return encode_checkpoint({"streams": self._streams})

    def restore(self, blob: bytes) -> None:
        """Replace detector state with a checkpoint's; CodecError/UnsupportedVersion if unreadable.

        Detectors keep the options they were created with; streams first seen
        after the restore use the current configuration.
        """
        state = decode_checkpoint(blob)
        streams = state.get("streams") if isinstance(state, dict) else None
        if not isinstance(streams, dict) or not all(isinstance(d, StreamDetector) for d in streams.values()):
            raise CodecError("anomaly checkpoint does not hold detector state")
        self._streams = streams
        logger.info("restored %d anomaly detectors (default type %s)", len(streams), DEFAULT_TYPE)
