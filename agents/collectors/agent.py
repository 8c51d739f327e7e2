"""The agent's own health: its CPU and memory, outbox, drops, publish latency, shedding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psutil

from agents.collectors.base import Collector, CollectorContext, register_collector, sample
from schemas.messages import MetricSample


@register_collector
class AgentHealthCollector(Collector):
    NAME = "agent"

    def __init__(self, options: Mapping[str, Any], context: CollectorContext) -> None:
        super().__init__(options, context)
        self._process = psutil.Process()
        self._process.cpu_percent()  # prime

    def collect(self, time_ms: int) -> list[MetricSample]:
        out = [sample(time_ms, "agent_cpu_percent", self._process.cpu_percent()),
               sample(time_ms, "agent_rss_bytes", self._process.memory_info().rss)]
        out += [sample(time_ms, f"agent_{name}", value)
                for name, value in sorted(self.context.agent_health().items())]
        return out
