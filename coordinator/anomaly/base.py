"""The per-stream detector interface and the registry that picks one by its ``type``.

A detector is a class registered under a name; the engine builds one per
(device, metric) stream from the operator's ``[anomaly.detector]`` table with
:func:`create_factory`, so adding a detector never touches the engine.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from coordinator.anomaly.alert import Alert
from schemas.errors import ConfigError

__all__ = ["DEFAULT_TYPE", "ForecastPoint", "StreamDetector", "create_factory", "detector_types",
           "register_detector"]

DEFAULT_TYPE = "robust_zscore"

_REGISTRY: dict[str, type[StreamDetector]] = {}

D = TypeVar("D", bound="type[StreamDetector]")


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
    def forecast(self, horizon: int) -> list[ForecastPoint]:
        """The next ``horizon`` samples' expected values and intervals (empty before any sample)."""


def register_detector(cls: D) -> D:
    """Class decorator: make ``cls`` selectable as ``type = cls.TYPE``."""
    name = cls.TYPE
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"anomaly detector type {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


_BUILTIN_MODULES = ("coordinator.anomaly.robust_zscore",)
#: Detectors whose dependencies are an extra: registered when the extra is installed.
_OPTIONAL_MODULES = {"coordinator.anomaly.river_holt": "river"}


def detector_types() -> list[str]:
    """The registered detector names, sorted (optional ones only when their extra is installed)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for module in _OPTIONAL_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    return sorted(_REGISTRY)


def create_factory(config: Mapping[str, Any], where: str) -> Callable[[str, str], StreamDetector]:
    """A builder of the detector named by ``config["type"]`` (default robust_zscore)."""
    known = detector_types()
    kind = config.get("type", DEFAULT_TYPE)
    if not isinstance(kind, str) or kind not in _REGISTRY:
        extras = [f"{module.rsplit('.', 1)[1]} (pip install 'edgebus[{extra}]')"
                  for module, extra in _OPTIONAL_MODULES.items() if module.rsplit(".", 1)[1] not in known]
        hint = f"; not installed: {', '.join(extras)}" if extras else ""
        raise ConfigError(f"{where}.type: unknown anomaly detector type {kind!r}; known: {', '.join(known)}"
                          f"{hint}")
    options = {k: v for k, v in config.items() if k != "type"}
    factory = _REGISTRY[kind].factory(options, where)
    _REGISTRY[kind].prepare()
    return factory
