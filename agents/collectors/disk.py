"""Disk use per configured mount point (an SD card filling up is a classic Pi death)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psutil

from agents.collectors.base import Collector, CollectorContext, register_collector, sample
from schemas.errors import ConfigError
from schemas.messages import MetricSample
from schemas.topics import ha_slug


@register_collector
class DiskCollector(Collector):
    NAME = "disk"

    def __init__(self, options: Mapping[str, Any], context: CollectorContext) -> None:
        super().__init__(options, context)
        paths = options.get("paths", ["/"])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
            raise ConfigError("metrics.disk.paths must be a non-empty list of mount points")
        self.paths: list[str] = paths

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("paths",)

    @staticmethod
    def metric_name(path: str) -> str:
        """``/`` is ``disk_used_percent``; ``/data`` is ``disk_data_used_percent``."""
        slug = ha_slug(path.strip("/")).lower() if path.strip("/") else ""
        return f"disk_{slug}_used_percent" if slug else "disk_used_percent"

    def collect(self, time_ms: int) -> list[MetricSample]:
        out = []
        for path in self.paths:
            try:
                usage = psutil.disk_usage(path)
            except OSError:
                continue  # an unmounted USB stick is not an error worth a crash
            out.append(sample(time_ms, self.metric_name(path), usage.percent))
        return out
