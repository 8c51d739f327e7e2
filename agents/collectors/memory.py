"""Memory and swap use."""

from __future__ import annotations

import psutil

from agents.collectors.base import Collector, register_collector, sample
from schemas.messages import MetricSample


@register_collector
class MemoryCollector(Collector):
    NAME = "memory"

    def collect(self, time_ms: int) -> list[MetricSample]:
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        return [sample(time_ms, "mem_used_percent", vm.percent),
                sample(time_ms, "mem_available_bytes", vm.available),
                sample(time_ms, "swap_used_percent", swap.percent)]
