"""The planner's input (everything it decides from) and its output (the moves, and what it could not do)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocols.placement.agent_view import AgentView
from protocols.placement.assignment import Placement
from protocols.placement.controls import OperatorControls
from protocols.placement.moves import Move, MoveRecord
from protocols.placement.validation import time_ms
from protocols.placement.workload import Workload

__all__ = ["Blocked", "Plan", "PlanInput"]


@dataclass(frozen=True, slots=True)
class PlanInput:
    """The fleet as the coordinator sees it at ``now_ms``; the planner reads nothing else.

    ``moves`` are the moves started recently (at least within the budget
    window and the settle time) and every one still in flight; the planner
    leaves in-flight work alone and counts them against the budget. An agent
    named by the placement but absent from ``agents`` is treated as gone.
    """

    now_ms: int
    agents: tuple[AgentView, ...]
    workloads: tuple[Workload, ...]
    placement: Placement = field(default_factory=Placement)
    moves: tuple[MoveRecord, ...] = ()
    controls: OperatorControls = field(default_factory=OperatorControls)

    def __post_init__(self) -> None:
        time_ms("plan input now_ms", self.now_ms)
        for name, kind in (("agents", AgentView), ("workloads", Workload), ("moves", MoveRecord)):
            items = tuple(getattr(self, name))
            object.__setattr__(self, name, items)
            for item in items:
                if not isinstance(item, kind):
                    raise ValueError(f"plan input {name} must hold {kind.__name__}s, "
                                     f"not {type(item).__name__}")
        for name in ("agents", "workloads"):
            ids = [x.id for x in getattr(self, name)]
            if len(ids) != len(set(ids)):
                dup = sorted(i for i in set(ids) if ids.count(i) > 1)
                raise ValueError(f"plan input {name}: {dup[0]!r} appears more than once")
        known = {w.id for w in self.workloads}
        for w in self.placement.assignments:
            if w not in known:
                raise ValueError(f"plan input: the placement names workload {w!r}, which is not in workloads")
        flying = [r.workload for r in self.moves if r.in_flight]
        if len(flying) != len(set(flying)):
            dup = sorted(w for w in set(flying) if flying.count(w) > 1)
            raise ValueError(f"plan input: workload {dup[0]!r} has more than one move in flight")


@dataclass(frozen=True, slots=True)
class Blocked:
    """A workload the planner could not help, and why in plain words."""

    workload: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The moves to start now, in order, each with its reason.

    ``unplaced``: work with no running owner that no agent can take now.
    ``stuck``: work that must leave its agent (drained, pinned elsewhere) that
    no agent can take now. ``budget_exhausted``: some move of running work
    waits for the move budget.
    """

    now_ms: int
    moves: tuple[Move, ...] = ()
    unplaced: tuple[Blocked, ...] = ()
    stuck: tuple[Blocked, ...] = ()
    budget_left: int = 0
    budget_exhausted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"now_ms": self.now_ms, "moves": [m.to_json() for m in self.moves],
                "unplaced": [{"workload": b.workload, "reason": b.reason} for b in self.unplaced],
                "stuck": [{"workload": b.workload, "reason": b.reason} for b in self.stuck],
                "budget_left": self.budget_left, "budget_exhausted": self.budget_exhausted}

    def summary(self) -> str:
        """One line per move and per blocked workload, for logs and the CLI."""
        lines = [f"{m.reason}: {m.workload} {m.source or '-'} -> {m.target} ({m.detail})" for m in self.moves]
        lines += [f"unplaced: {b.workload} ({b.reason})" for b in self.unplaced]
        lines += [f"stuck: {b.workload} ({b.reason})" for b in self.stuck]
        if self.budget_exhausted:
            lines.append("more moves wait for the move budget")
        return "\n".join(lines) or "nothing to do"
