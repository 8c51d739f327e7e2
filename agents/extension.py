"""What the runtime calls on the parts it hosts (Home Assistant, commands, cameras).

Parts subclass :class:`AgentExtension` and override what they need; the
runtime calls every hook on its main thread, and a hook that raises is logged,
never fatal.
"""

from __future__ import annotations

from collections.abc import Mapping

from agents.shedding import SheddingPolicy
from schemas.messages import MetricSample

__all__ = ["AgentExtension"]


class AgentExtension:
    """No-op hooks; override the ones that matter."""

    name = "extension"

    def start(self) -> None:
        """Called just before the bus session starts: subscribe here, and they go out first."""

    def stop(self) -> None:
        """Called first on shutdown: flush what is buffered into the outbox."""

    def on_state(self, latest_metrics: Mapping[str, float]) -> None:
        """Called every batch interval with the latest value of every metric."""

    def collect(self, time_ms: int) -> list[MetricSample]:
        """Metric samples of this part's own (joined to the device's metrics batches)."""
        return []

    def on_shedding(self, policy: SheddingPolicy) -> None:
        """Called when the shedding level changed; ``policy.allows(priority)`` says what runs."""
