"""Online anomaly detection and short-horizon forecasts for the coordinator's metric streams.

:class:`AnomalyEngine` scores every sample of every (device, metric) stream
online and returns one :class:`Alert` per anomaly episode;
:class:`BatchDetector` (pyod, optional) looks at a device's metrics together.
Neither does I/O: the ingest path publishes, stores and checkpoints.
"""

from coordinator.anomaly.alert import Alert, AlertKind, Severity
from coordinator.anomaly.base import ForecastPoint, StreamDetector, detector_types, register_detector
from coordinator.anomaly.engine import AnomalyEngine, StreamSample

__all__ = ["Alert", "AlertKind", "AnomalyEngine", "ForecastPoint", "Severity", "StreamDetector",
           "StreamSample", "detector_types", "register_detector"]
