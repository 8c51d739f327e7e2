"""Report by exception: send a metric only when it moved by more than its deadband.

A gateway on a metered link should not pay for a disk-usage figure that has
not changed in an hour. Each metric gets a deadband (absolute change that
counts as news); a value inside it is suppressed, except that every metric is
re-sent at least every ``heartbeat`` seconds so a subscriber can tell "steady"
from "gone". Suppressed samples are counted so the saving is visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas.messages import MetricSample

__all__ = ["DeadbandFilter"]


@dataclass
class DeadbandFilter:
    """Decides which samples are news. Pure: time comes in with the samples."""

    deadbands: Mapping[str, float] = field(default_factory=dict)
    default_deadband: float = 0.0
    heartbeat_ms: int = 60_000
    suppressed: int = 0
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def deadband(self, name: str) -> float:
        return self.deadbands.get(name, self.default_deadband)

    def admit(self, samples: Iterable[MetricSample]) -> list[MetricSample]:
        """The samples worth sending; remembers what was sent."""
        out: list[MetricSample] = []
        for sample in samples:
            value = float(sample.value)
            last = self._last.get(sample.name)
            if last is not None:
                last_value, last_time = last
                quiet = sample.time_ms - last_time < self.heartbeat_ms
                if quiet and abs(value - last_value) <= self.deadband(sample.name):
                    self.suppressed += 1
                    continue
            self._last[sample.name] = (value, sample.time_ms)
            out.append(sample)
        return out
