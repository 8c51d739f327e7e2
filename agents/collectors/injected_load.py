"""Load drills: report the metrics a JSON file holds, as if the box measured them.

``[metrics] collectors = [..., "injected_load"]`` with ``[metrics.injected_load]
file = "/path/load.json"`` (``{"cpu_percent": 95}``): each collection reads the
file and reports every number in it; no file, nothing. It lets an operator (or
a test) overload one agent on paper and watch the balancer move its cameras,
without burning the CPU of a box that other agents share. Put it after the
``cpu`` collector so its ``cpu_percent`` is the later (the one read) sample.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.collectors.base import Collector, CollectorContext, register_collector, sample
from schemas.errors import ConfigError
from schemas.messages import MetricSample

logger = logging.getLogger(__name__)


@register_collector
class InjectedLoadCollector(Collector):
    NAME = "injected_load"

    def __init__(self, options: Mapping[str, Any], context: CollectorContext) -> None:
        super().__init__(options, context)
        file = options.get("file")
        if not isinstance(file, str) or not file:
            raise ConfigError("metrics.injected_load.file is required: the JSON file of metric -> value")
        self.file = Path(file)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("file",)

    def collect(self, time_ms: int) -> list[MetricSample]:
        try:
            body = json.loads(self.file.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            logger.warning("injected load %s unreadable: %s", self.file, exc)
            return []
        if not isinstance(body, dict):
            return []
        return [sample(time_ms, str(k), v) for k, v in sorted(body.items())
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
