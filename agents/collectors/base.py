"""The collector interface and registry.

A collector turns one look at the machine into metric samples. Collectors
that report rates (network throughput) keep the previous counters and return
nothing on their first call rather than a made-up zero. ``priority`` feeds the
agent's load shedding (0 never sheds). Every module of ``agents/collectors/``
is imported when a collector is first looked up, so a new collector is one new
file that registers its class.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from broker.plugin_registry import PluginRegistry
from schemas.errors import ConfigError
from schemas.messages import MetricSample

__all__ = ["COLLECTORS", "Collector", "CollectorContext", "collector_names", "create_collector",
           "register_collector"]


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


#: The collectors by ``NAME``: every module of this package (base.py included, harmlessly).
COLLECTORS: PluginRegistry[Collector] = PluginRegistry("collector", "agents.collectors", name_attr="NAME")
#: Class decorator: make a collector selectable by its ``NAME`` in ``[metrics] collectors``.
register_collector = COLLECTORS.register


def collector_names() -> list[str]:
    """The registered collector names, sorted."""
    return COLLECTORS.names()


def create_collector(name: str, options: Mapping[str, Any], context: CollectorContext) -> Collector:
    """The collector ``name`` with its ``[metrics.<name>]`` options; ConfigError naming the known ones."""
    return COLLECTORS.get(name, "metrics.collectors")(options, context)


def sample(time_ms: int, name: str, value: float) -> MetricSample:
    """A sample with the value rounded to what the wire keeps cheaply (2 decimals)."""
    return MetricSample(time_ms=time_ms, name=name, value=round(float(value), 2))
