"""The placement table: which agent owns each workload, and since when.

This is what the coordinator keeps replicated (one owner per workload). The
planner reads it; the binding writes it when a move commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.placement.validation import agent_id, frozen, time_ms, workload_id
from schemas.record_base import empty_map

__all__ = ["Assignment", "Placement"]


@dataclass(frozen=True, slots=True)
class Assignment:
    """``agent`` owns the workload since ``since_ms`` (placed or moved there then: the dwell clock)."""

    agent: str
    since_ms: int = 0

    def __post_init__(self) -> None:
        agent_id("assignment agent", self.agent)
        time_ms("assignment since_ms", self.since_ms)


@dataclass(frozen=True, slots=True)
class Placement:
    """Workload id -> :class:`Assignment`; a workload that is absent has no owner.

    >>> p = Placement.of({"door": "gw-1"}).moved("door", "gw-2", 5_000)
    >>> p.agent_of("door"), p.since("door"), p.on("gw-2")
    ('gw-2', 5000, ('door',))
    """

    assignments: Mapping[str, Assignment] = field(default_factory=empty_map)

    def __post_init__(self) -> None:
        if not isinstance(self.assignments, Mapping):
            raise ValueError("placement must map workload ids to assignments")
        for w, a in self.assignments.items():
            workload_id("placement workload", w)
            if not isinstance(a, Assignment):
                raise ValueError(f"placement of {w}: expected an Assignment, not {type(a).__name__}")
        object.__setattr__(self, "assignments", frozen(self.assignments))

    @classmethod
    def of(cls, owners: Mapping[str, str], since_ms: int = 0) -> Placement:
        """A placement from ``{workload: agent}``, every assignment made at ``since_ms``."""
        return cls({w: Assignment(a, since_ms) for w, a in owners.items()})

    def agent_of(self, workload: str) -> str | None:
        a = self.assignments.get(workload)
        return None if a is None else a.agent

    def since(self, workload: str) -> int | None:
        a = self.assignments.get(workload)
        return None if a is None else a.since_ms

    def on(self, agent: str) -> tuple[str, ...]:
        """The workloads ``agent`` owns, sorted."""
        return tuple(w for w, a in self.assignments.items() if a.agent == agent)

    def owners(self) -> dict[str, str]:
        return {w: a.agent for w, a in self.assignments.items()}

    def moved(self, workload: str, agent: str, now_ms: int) -> Placement:
        """This placement with ``workload`` owned by ``agent`` from ``now_ms`` (a committed move)."""
        return Placement({**self.assignments, workload: Assignment(agent, now_ms)})

    def without(self, workload: str) -> Placement:
        return Placement({w: a for w, a in self.assignments.items() if w != workload})

    def to_json(self) -> dict[str, Any]:
        return {w: {"agent": a.agent, "since_ms": a.since_ms} for w, a in self.assignments.items()}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Placement:
        """The inverse of :meth:`to_json`; a malformed entry is a ValueError naming the workload."""
        out: dict[str, Assignment] = {}
        for w, a in body.items():
            if not isinstance(a, Mapping) or set(a) != {"agent", "since_ms"}:
                raise ValueError(f"placement of {w!r} must be {{\"agent\": ..., \"since_ms\": ...}}")
            out[w] = Assignment(agent_id(f"placement of {w!r}", a["agent"]), a["since_ms"])
        return cls(out)
