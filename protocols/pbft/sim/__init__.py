"""The PBFT simulator: seeded faulty runs of 3f+1 replicas, Byzantine behaviours, invariant checkers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocols.pbft.client import Client
from protocols.pbft.replica import Replica
from protocols.pbft.sim.checkers import check_all
from protocols.pbft.sim.cluster import PbftHistory, PbftSimConfig, PbftSimulation

__all__ = ["PbftHistory", "PbftRunReport", "PbftSimConfig", "PbftSimulation", "run_seed"]


@dataclass(frozen=True, slots=True)
class PbftRunReport:
    seed: int
    violations: dict[str, list[str]]
    history: PbftHistory

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def summary(self) -> str:
        h = self.history
        bad = {k: v[:3] for k, v in self.violations.items() if v}
        return (
            f"seed={self.seed} byzantine={h.byzantine} executions={len(h.executions)} "
            f"accepted={len(h.acceptances)} views={max((v for _, _, v in h.views), default=0)} "
            f"faults={len(h.faults)} exposed={sorted(h.exposed)} violations={bad or 'none'}"
        )


def run_seed(
    seed: int, config: PbftSimConfig | None = None, replica_class: Callable[..., Replica] = Replica,
    client_class: Callable[..., Client] = Client, check_liveness: bool = True,
) -> PbftRunReport:
    """Simulate ``seed`` and judge it; the same arguments replay it exactly."""
    h = PbftSimulation(seed, config or PbftSimConfig(), replica_class, client_class).run()
    return PbftRunReport(seed, check_all(h, check_liveness), h)
