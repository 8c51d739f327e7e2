"""Run one seed and judge it: the entry point tests use, and ``replay(seed)`` for a failing seed."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.sim.checkers import check_all
from protocols.sim.cluster import NodeFactory, SimConfig, Simulation
from protocols.sim.history import History


@dataclass(frozen=True, slots=True)
class RunReport:
    seed: int
    violations: dict[str, list[str]]
    history: History

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def summary(self) -> str:
        h = self.history
        bad = {k: v[:3] for k, v in self.violations.items() if v}
        return (
            f"seed={self.seed} elections={len(h.elections)} acks={len(h.acks)} applied={len(h.applied)} "
            f"faults={len(h.faults)} violations={bad or 'none'}"
        )


def run_seed(
    seed: int, config: SimConfig | None = None, node_factory: NodeFactory | None = None,
    check_liveness: bool = True,
) -> RunReport:
    """Simulate ``seed`` and run every checker over its history."""
    cfg = config or SimConfig()
    history = Simulation(seed, cfg, node_factory).run()
    return RunReport(seed, check_all(history, cfg.liveness_bound if check_liveness else None), history)


def replay(seed: int, config: SimConfig | None = None, node_factory: NodeFactory | None = None) -> RunReport:
    """Re-run a failing seed exactly (same config, same factory) to debug it."""
    return run_seed(seed, config, node_factory)
