"""The planner's knobs: score weights, thresholds and the guards that keep it from flapping.

Operator configuration (``[placement]`` in the coordinator's file): strict,
and every error names the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from protocols.placement.validation import fraction, from_table, non_negative, whole
from schemas.errors import ConfigError

__all__ = ["PlannerConfig"]


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Defaults suit a fleet of cameras reporting metrics every few seconds.

    Score (higher is a better home for a workload, computed as if it ran there):
    ``cpu_weight * CPU headroom + memory_weight * memory headroom +
    tx_weight * transaction headroom`` (the three weights sum to 1), plus
    ``performance_weight * detector headroom`` for work that runs a detector
    (its frames/s against what the box measured for that backend).

    Triggers: an agent is overloaded at ``overload_cpu`` CPU share (now, or as
    forecast), ``overload_memory`` memory share, or when its detectors are
    asked for more frames than they measured. Its utilisation is the same
    weights over its CPU, memory and transaction shares (one minus its
    headroom score); it carries more than its share when that is more than
    ``rebalance_tolerance`` (relative) above the fleet's mean, and less when
    below it by as much.

    Guards: a voluntary move must raise the score by more than ``hysteresis``;
    a workload stays at least ``min_dwell_ms`` where it was put before it is
    moved voluntarily; at most ``move_budget`` moves of running work start in
    any ``budget_window_ms``; an agent takes part in no voluntary move until
    ``settle_ms`` of its measurements show its last move; an offline agent's
    work waits ``evacuate_after_ms`` for it to come back.

    >>> PlannerConfig(move_budget=6).move_budget
    6
    >>> PlannerConfig(cpu_weight=0.5)
    Traceback (most recent call last):
    ...
    schemas.errors.ConfigError: placement: cpu_weight + memory_weight + tx_weight must be 1, not 1.1
    """

    cpu_weight: float = 0.4
    memory_weight: float = 0.3
    tx_weight: float = 0.3
    performance_weight: float = 0.1
    overload_cpu: float = 0.85
    overload_memory: float = 0.90
    rebalance_tolerance: float = 0.10
    hysteresis: float = 0.02
    min_dwell_ms: int = 60_000
    move_budget: int = 10
    budget_window_ms: int = 60_000
    settle_ms: int = 2_000
    evacuate_after_ms: int = 10_000

    def __post_init__(self) -> None:
        for name in ("cpu_weight", "memory_weight", "tx_weight", "overload_cpu", "overload_memory",
                     "rebalance_tolerance", "hysteresis"):
            fraction(f"placement: {name}", getattr(self, name), ConfigError)
        non_negative("placement: performance_weight", self.performance_weight, ConfigError)
        total = self.cpu_weight + self.memory_weight + self.tx_weight
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ConfigError(f"placement: cpu_weight + memory_weight + tx_weight must be 1, not {total:.6g}")
        if self.overload_cpu == 0 or self.overload_memory == 0:
            raise ConfigError("placement: overload_cpu and overload_memory must be above 0")
        for name in ("min_dwell_ms", "move_budget", "settle_ms", "evacuate_after_ms"):
            whole(f"placement: {name}", getattr(self, name), 0, ConfigError)
        whole("placement: budget_window_ms", self.budget_window_ms, 1, ConfigError)
        for name in ("cpu_weight", "memory_weight", "tx_weight", "performance_weight", "overload_cpu",
                     "overload_memory", "rebalance_tolerance", "hysteresis"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "placement") -> PlannerConfig:
        """A config from a TOML table; an unknown key is an error naming it."""
        return from_table(cls, data, where, "placement")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


