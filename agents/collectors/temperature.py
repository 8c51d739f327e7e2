"""Temperatures from every sensor the kernel exposes (SoC, NVMe, ...), in °C."""

from __future__ import annotations

import re

import psutil

from agents.collectors.base import Collector, register_collector, sample
from schemas.messages import MetricSample

_NON_NAME = re.compile(r"[^a-z0-9_]+")


@register_collector
class TemperatureCollector(Collector):
    NAME = "temperature"
    PRIORITY = 1

    def collect(self, time_ms: int) -> list[MetricSample]:
        read = getattr(psutil, "sensors_temperatures", None)
        if read is None:
            return []
        out = []
        for chip, entries in read().items():
            for i, entry in enumerate(entries):
                label = entry.label or (chip if len(entries) == 1 else f"{chip}_{i}")
                if label != chip and not label.startswith(chip):
                    label = f"{chip}_{label}"
                name = _NON_NAME.sub("_", label.lower()).strip("_")
                out.append(sample(time_ms, f"temp_{name}_c", entry.current))
        return out
