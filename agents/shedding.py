"""Load shedding: which priorities may run when the agent is under pressure.

Work has a priority (0 is the most important: presence, metrics; higher
numbers are cheaper to lose: detection on a secondary camera, motion-less
frames). The policy turns pressure readings into a *level*: work with
``priority > levels - level`` is skipped, and every skip is counted so the
shedding shows up in metrics.

The readings are what shedding can relieve (see :class:`Pressure`), not the
machine's total CPU: an agent that sheds because *another* program is busy
loses its own work and frees nothing. Two brakes keep the level from flapping
on noisy readings: hysteresis (enter above ``high``, leave below ``low``) and a
dwell time (a level holds at least ``dwell_s`` seconds before it moves again),
so the number of changes is bounded by the elapsed time over ``dwell_s``.
Pure: readings and the time come in, a level goes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from schemas.errors import ConfigError

__all__ = ["Pressure", "SheddingPolicy"]


@dataclass(frozen=True, slots=True)
class Pressure:
    """One reading of the load shedding can relieve, each as a fraction 0..1.

    ``process_cpu`` is the agent process's own share of the CPUs it may run on
    (all its threads, cameras and detectors included): shedding lowers it, while
    the rest of the machine's CPU is other programs' and shedding cannot touch it.
    ``memory`` stays system-wide because the kernel's OOM killer acts on the
    whole machine's memory, and the agent is a candidate whoever filled it.
    ``outbox`` is how full the on-disk outbox is (messages or bytes).
    """

    process_cpu: float
    memory: float
    outbox: float

    def worst(self) -> float:
        return max(self.process_cpu, self.memory, self.outbox)


@dataclass
class SheddingPolicy:
    """Maps pressure to a shedding level 0 (run everything) .. ``levels``.

    Each level above 0 drops the lowest-priority band still running: at level
    ``n`` only priorities ``<= levels - n`` run, so priority 0 always runs.
    ``changes`` counts level changes (the ``agent_shed_level_changes_total`` metric).
    """

    high: float = 0.90
    low: float = 0.75
    levels: int = 3
    dwell_s: float = 10.0
    level: int = 0
    changes: int = 0
    _changed_at: float = field(default=-math.inf, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high <= 1:
            raise ConfigError(f"shedding needs 0 < low < high <= 1 (low={self.low}, high={self.high})")
        if self.levels < 1:
            raise ConfigError("shedding levels must be at least 1")
        if not (math.isfinite(self.dwell_s) and self.dwell_s >= 0):
            raise ConfigError(f"shedding dwell must be a finite number >= 0, not {self.dwell_s!r}")

    def update(self, pressure: Pressure, now: float) -> int:
        """Move at most one level: up above ``high``, down below ``low``, not within the dwell."""
        if now - self._changed_at < self.dwell_s:
            return self.level
        worst = pressure.worst()
        if worst >= self.high and self.level < self.levels:
            self.level += 1
        elif worst < self.low and self.level > 0:
            self.level -= 1
        else:
            return self.level
        self.changes += 1
        self._changed_at = now
        return self.level

    def allows(self, priority: int) -> bool:
        """Whether work of ``priority`` may run at the current level."""
        return priority == 0 or priority <= self.levels - self.level
