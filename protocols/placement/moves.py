"""Moves: what the planner asks for (:class:`Move`), and what the binding started (:class:`MoveRecord`).

The binding carries a :class:`Move` out as one two-phase commit transaction
(release on the source, take on the target) and keeps a :class:`MoveRecord`
of it; the planner reads the records back to leave in-flight work alone, to
keep the move budget, and to know which moves an agent's last measurement
does not show yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocols.placement.validation import agent_id, time_ms, workload_id

__all__ = ["Move", "MoveReason", "MoveRecord", "MoveState"]


class MoveReason(StrEnum):
    PLACE = "place"  # the workload has no owner: new work
    EVACUATE = "evacuate"  # its owner is offline (past the grace period) or unknown
    DRAIN = "drain"  # the operator drains its owner
    PIN = "pin"  # its owner is no longer allowed (pinned elsewhere, out of reach, no accelerator)
    RELIEVE = "relieve"  # its owner is overloaded, or forecast to be
    REBALANCE = "rebalance"  # its owner carries more than its share of the fleet's load

    @property
    def budgeted(self) -> bool:
        """Counted against the move budget: the work runs now and a move interrupts it.

        Placing and evacuating are not: that work is not running, and waiting
        would only lose more frames.
        """
        return self in _BUDGETED

    @property
    def voluntary(self) -> bool:
        """Chosen by the balancer (not needed for correctness): hysteresis and dwell time apply."""
        return self in (MoveReason.RELIEVE, MoveReason.REBALANCE)


_BUDGETED = frozenset({MoveReason.DRAIN, MoveReason.PIN, MoveReason.RELIEVE, MoveReason.REBALANCE})


@dataclass(frozen=True, slots=True)
class Move:
    """Move ``workload`` from ``source`` (None: it has no owner) to ``target``, for ``reason``.

    ``detail`` says why in plain words, for the operator and the decision log;
    ``gain`` is the placement score's improvement (voluntary moves only).
    """

    workload: str
    source: str | None
    target: str
    reason: MoveReason
    detail: str = ""
    gain: float | None = None

    def __post_init__(self) -> None:
        workload_id("move workload", self.workload)
        if self.source is not None:
            agent_id("move source", self.source)
        agent_id("move target", self.target)
        if self.source == self.target:
            raise ValueError(f"move of {self.workload}: source and target are both {self.target}")
        object.__setattr__(self, "reason", MoveReason(self.reason))

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "source": self.source, "target": self.target,
                "reason": self.reason.value, "detail": self.detail,
                "gain": None if self.gain is None else round(self.gain, 4)}


class MoveState(StrEnum):
    IN_FLIGHT = "in_flight"  # its transaction has not ended
    COMMITTED = "committed"  # the target owns it and runs it
    ABORTED = "aborted"  # nothing changed


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """A move the binding started at ``started_ms``, and how it ended (``finished_ms``).

    Mark a move committed once the target runs the work (its report says so),
    not merely when the transaction commits: the planner treats measurements
    taken after ``finished_ms`` as showing the move.
    """

    workload: str
    source: str | None
    target: str
    reason: MoveReason
    started_ms: int
    state: MoveState = MoveState.IN_FLIGHT
    finished_ms: int | None = None

    def __post_init__(self) -> None:
        workload_id("move record workload", self.workload)
        if self.source is not None:
            agent_id("move record source", self.source)
        agent_id("move record target", self.target)
        object.__setattr__(self, "reason", MoveReason(self.reason))
        object.__setattr__(self, "state", MoveState(self.state))
        time_ms("move record started_ms", self.started_ms)
        if (self.state is MoveState.IN_FLIGHT) != (self.finished_ms is None):
            raise ValueError(f"move record of {self.workload}: finished_ms is set exactly when it is "
                             f"committed or aborted (state {self.state}, finished_ms {self.finished_ms})")
        if self.finished_ms is not None and time_ms("move record finished_ms",
                                                    self.finished_ms) < self.started_ms:
            raise ValueError(f"move record of {self.workload}: finished_ms {self.finished_ms} is before "
                             f"started_ms {self.started_ms}")

    @classmethod
    def start(cls, move: Move, now_ms: int) -> MoveRecord:
        return cls(move.workload, move.source, move.target, move.reason, now_ms)

    def finish(self, committed: bool, now_ms: int) -> MoveRecord:
        return MoveRecord(self.workload, self.source, self.target, self.reason, self.started_ms,
                          MoveState.COMMITTED if committed else MoveState.ABORTED, now_ms)

    @property
    def in_flight(self) -> bool:
        return self.state is MoveState.IN_FLIGHT
