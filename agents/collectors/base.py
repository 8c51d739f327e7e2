"""The collector interface and registry.

A collector turns one look at the machine into metric samples. Collectors
that report rates (network throughput) keep the previous counters and return
nothing on their first call rather than a made-up zero. ``priority`` feeds the
agent's load shedding (0 never sheds).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from schemas.errors import ConfigError
from schemas.messages import MetricSample

__all__ = ["Collector", "CollectorContext", "collector_names", "create_collector",
           "register_collector"]

_REGISTRY: dict[str, type[Collector]] = {}
_BUILTIN = ("cpu", "memory", "disk", "temperature", "network", "battery", "agent")

C = TypeVar("C", bound="type[Collector]")


class CollectorContext:
    """What a collector may read besides the machine: the agent's own health."""

    def agent_health(self) -> Mapping[str, float]:
        """Outbox depth, drops, latency, shedding: filled in by the runtime."""
        return {}


class Collector(abc.ABC):
    NAME: ClassVar[str]
    #: Shedding priority; 0 = always runs.
    PRIORITY: ClassVar[int] = 0

    def __init__(self, options: Mapping[str, Any], context: CollectorContext) -> None:
        unknown = set(options) - set(self.option_names())
        if unknown:
            raise ConfigError(f"metrics.{self.NAME}: unknown key {sorted(unknown)[0]!r}; known keys: "
                              f"{', '.join(sorted(self.option_names())) or '(none)'}")
        self.context = context

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Keys this collector accepts in its ``[metrics.<name>]`` table."""
        return ()

    @abc.abstractmethod
    def collect(self, time_ms: int) -> list[MetricSample]:
        """Samples stamped ``time_ms``; an empty list when there is nothing to report."""


def register_collector(cls: C) -> C:
    _REGISTRY[cls.NAME] = cls
    return cls


def _load() -> None:
    for name in _BUILTIN:
        importlib.import_module(f"agents.collectors.{name}")


def collector_names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def create_collector(name: str, options: Mapping[str, Any], context: CollectorContext) -> Collector:
    _load()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"metrics.collectors: unknown collector {name!r}; known: "
                          f"{', '.join(sorted(_REGISTRY))}")
    return cls(options, context)


def sample(time_ms: int, name: str, value: float) -> MetricSample:
    """A sample with the value rounded to what the wire keeps cheaply (2 decimals)."""
    return MetricSample(time_ms=time_ms, name=name, value=round(float(value), 2))
