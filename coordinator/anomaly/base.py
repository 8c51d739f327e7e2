"""The per-stream detector interface and the registry that picks one by its ``type``.

A detector is a class registered under a name, one module in
``coordinator/anomaly/plugins/``; the engine builds one per
(device, metric) stream from the operator's ``[anomaly.detector]`` table with
:func:`create_factory`, so adding a detector is one new file and never touches
the engine.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from broker.plugin_registry import PluginRegistry
from coordinator.anomaly.alert import Alert

__all__ = ["ANOMALY_DETECTORS", "DEFAULT_TYPE", "ForecastPoint", "StreamDetector", "create_factory",
           "detector_types", "register_detector", "sample_interval"]

DEFAULT_TYPE = "robust_zscore"


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """One step of a forecast: the expected value and an interval around it."""

    time_ms: int
    mean: float
    low: float
    high: float


class StreamDetector(abc.ABC):
    """Scores one (device, metric) stream online: each sample is scored before it is learned.

    ``step`` returns an :class:`Alert` only on the sample that opens an
    episode. Instances are pickled into checkpoints, so they hold plain data.
    """

    #: The ``type`` value that selects this detector in configuration.
    TYPE: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def factory(cls, options: Mapping[str, Any], where: str) -> Callable[[str, str], StreamDetector]:
        """Validate ``options`` once (unknown keys are errors) and return a builder of fresh detectors."""

    @classmethod  # noqa: B027 - a hook: most detectors have nothing to prepare
    def prepare(cls) -> None:
        """Get ready before the first sample (compile a kernel, say): called when an engine is configured."""

    @abc.abstractmethod
    def step(self, time_ms: int, value: float) -> Alert | None:
        """Score ``value`` against what was learned so far, then learn from it."""

    def step_many(self, times: Sequence[int], values: Sequence[float]) -> list[tuple[int, Alert]]:
        """:meth:`step` over a run of this stream's samples in order; ``(index, alert)`` per alert.

        The engine scores a batch stream by stream through this, so a detector
        can override it with a loop over local variables (the per-sample method
        calls are most of the cost); the result must be what ``step`` gives.
        """
        found = []
        step = self.step
        for i, (time_ms, value) in enumerate(zip(times, values, strict=True)):
            alert = step(time_ms, value)
            if alert is not None:
                found.append((i, alert))
        return found

    @abc.abstractmethod
    def peek(self, time_ms: int, value: float) -> float:
        """The score ``step`` would give this sample, learning nothing."""

    @abc.abstractmethod
    def peek_calibrated(self, time_ms: int, value: float) -> float:
        """The sample's calibrated score in [0, 1] (as an alert on it would carry), learning nothing:
        comparable across streams (:func:`~coordinator.anomaly.threshold.calibrated_score`)."""

    @abc.abstractmethod
    def forecast(self, horizon: int) -> list[ForecastPoint]:
        """The next ``horizon`` samples' expected values and intervals (empty before any sample)."""


#: The stream detectors by ``type``, found in coordinator/anomaly/plugins/ (river_holt only with river).
ANOMALY_DETECTORS: PluginRegistry[StreamDetector] = PluginRegistry(
    "anomaly detector", "coordinator.anomaly.plugins", default=DEFAULT_TYPE)
#: Class decorator: make a detector selectable as ``type = cls.TYPE``.
register_detector = ANOMALY_DETECTORS.register


def sample_interval(dt_ms: float, last_ms: int | None, time_ms: int) -> float:
    """The stream's usual gap between samples (ms) once a sample at ``time_ms`` follows one at
    ``last_ms``: a moving average of the gaps, 0.0 before the first; forecasts step by it.

    (coordinator/anomaly/zscore_kernel.py repeats it inline, compiled.)
    """
    if last_ms is None or time_ms <= last_ms:
        return dt_ms
    gap = float(time_ms - last_ms)
    return gap if dt_ms == 0.0 else dt_ms + 0.05 * (gap - dt_ms)


def detector_types() -> list[str]:
    """The registered detector names, sorted (optional ones only when their extra is installed)."""
    return ANOMALY_DETECTORS.names()


def create_factory(config: Mapping[str, Any], where: str) -> Callable[[str, str], StreamDetector]:
    """A builder of the detector named by ``config["type"]`` (default robust_zscore)."""
    cls = ANOMALY_DETECTORS.lookup(config, where)
    factory = cls.factory({k: v for k, v in config.items() if k != "type"}, where)
    cls.prepare()
    return factory
