"""Load shedding: which priorities may run when the device is under pressure.

An agent on a Raspberry Pi shares the CPU with whatever else the owner runs,
and its outbox fills while the broker is away. Work has a priority (0 is the
most important: presence, metrics; higher numbers are cheaper to lose:
detection on a secondary camera, motion-less frames). The policy turns the
pressure readings into a *level*: work with ``priority > max_priority(level)``
is skipped, and every skip is counted so the shedding shows up in metrics.

Hysteresis (enter above ``high``, leave below ``low``) keeps the level from
flapping on a noisy CPU reading. Pure: readings come in, a level goes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import ConfigError

__all__ = ["Pressure", "SheddingPolicy"]


@dataclass(frozen=True, slots=True)
class Pressure:
    """One reading of how loaded the device is, each as a fraction 0..1."""

    cpu: float
    memory: float
    outbox: float

    def worst(self) -> float:
        return max(self.cpu, self.memory, self.outbox)


@dataclass
class SheddingPolicy:
    """Maps pressure to a shedding level 0 (run everything) .. ``levels``.

    Each level above 0 drops the lowest-priority band still running: at level
    ``n`` only priorities ``< levels - n + 1`` run, so priority 0 always runs.
    """

    high: float = 0.90
    low: float = 0.75
    levels: int = 3
    level: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high <= 1:
            raise ConfigError(f"shedding needs 0 < low < high <= 1 (low={self.low}, high={self.high})")
        if self.levels < 1:
            raise ConfigError("shedding levels must be at least 1")

    def update(self, pressure: Pressure) -> int:
        """Move at most one level per reading: up above ``high``, down below ``low``."""
        worst = pressure.worst()
        if worst >= self.high and self.level < self.levels:
            self.level += 1
        elif worst < self.low and self.level > 0:
            self.level -= 1
        return self.level

    def allows(self, priority: int) -> bool:
        """Whether work of ``priority`` may run at the current level."""
        return priority == 0 or priority <= self.levels - self.level
