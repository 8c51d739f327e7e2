"""Battery charge and whether mains power is present (UPS HATs, laptops as gateways)."""

from __future__ import annotations

import psutil

from agents.collectors.base import Collector, register_collector, sample
from schemas.messages import MetricSample


@register_collector
class BatteryCollector(Collector):
    NAME = "battery"

    def collect(self, time_ms: int) -> list[MetricSample]:
        read = getattr(psutil, "sensors_battery", None)
        battery = read() if read is not None else None
        if battery is None:
            return []  # no battery: report nothing rather than a fake 100 %
        out = [sample(time_ms, "battery_percent", battery.percent)]
        if battery.power_plugged is not None:
            out.append(sample(time_ms, "battery_plugged", 1 if battery.power_plugged else 0))
        return out
