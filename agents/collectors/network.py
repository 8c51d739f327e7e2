"""Network throughput (bytes/s over all interfaces but loopback) and error counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psutil

from agents.collectors.base import Collector, CollectorContext, register_collector, sample
from schemas.messages import MetricSample


@register_collector
class NetworkCollector(Collector):
    NAME = "network"
    PRIORITY = 1

    def __init__(self, options: Mapping[str, Any], context: CollectorContext) -> None:
        super().__init__(options, context)
        self._last: tuple[int, int, int] | None = None

    def _totals(self) -> tuple[int, int, int]:
        rx = tx = errors = 0
        for nic, c in psutil.net_io_counters(pernic=True).items():
            if nic == "lo":
                continue
            rx, tx, errors = rx + c.bytes_recv, tx + c.bytes_sent, errors + c.errin + c.errout
        return rx, tx, errors

    def collect(self, time_ms: int) -> list[MetricSample]:
        rx, tx, errors = self._totals()
        last, self._last = self._last, (time_ms, rx, tx)
        if last is None or time_ms <= last[0]:
            return []  # a rate needs two readings
        seconds = (time_ms - last[0]) / 1000
        return [sample(time_ms, "net_rx_bytes_per_s", max(0, rx - last[1]) / seconds),
                sample(time_ms, "net_tx_bytes_per_s", max(0, tx - last[2]) / seconds),
                sample(time_ms, "net_errors_total", errors)]
