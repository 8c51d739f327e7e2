"""CPU: total and per-core utilisation, load averages."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psutil

from agents.collectors.base import Collector, CollectorContext, register_collector, sample
from schemas.messages import MetricSample


@register_collector
class CpuCollector(Collector):
    NAME = "cpu"

    def __init__(self, options: Mapping[str, Any], context: CollectorContext) -> None:
        super().__init__(options, context)
        self.per_core = bool(options.get("per_core", True))
        psutil.cpu_percent(percpu=True)  # primes the counters: the first real call is a delta

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("per_core",)

    def collect(self, time_ms: int) -> list[MetricSample]:
        cores = psutil.cpu_percent(percpu=True)
        out = [sample(time_ms, "cpu_percent", sum(cores) / max(1, len(cores)))]
        if self.per_core:
            out += [sample(time_ms, f"cpu{i}_percent", p) for i, p in enumerate(cores)]
        load1, load5, load15 = os.getloadavg()
        out += [sample(time_ms, "load1", load1), sample(time_ms, "load5", load5),
                sample(time_ms, "load15", load15)]
        return out
