"""The placement table: which agent owns each managed camera, since when, and who lost it by evacuation.

Published retained on ``{root}/_sys/placement/{group}/table`` by the placer
after every change, so a standby that takes over (and an agent that comes
back) reads the latest. Ownership follows the agents' own reports (their
retained ``state/cameras``) and the outcome of the placer's moves; an agent
whose camera was evacuated while it was away is *revoked*: its stale report
is not ownership, and it drops the camera when it reconnects
(:mod:`agents.camera.placement_fence`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.placement import Assignment, MoveReason, MoveRecord, MoveState, Placement

__all__ = ["PlacementTable", "record_from_json", "record_to_json"]

logger = logging.getLogger(__name__)

_KEEP_DECISIONS = 20


def record_to_json(r: MoveRecord) -> dict[str, Any]:
    return {"workload": r.workload, "source": r.source, "target": r.target, "reason": r.reason.value,
            "started_ms": r.started_ms, "state": r.state.value, "finished_ms": r.finished_ms}


def record_from_json(body: Mapping[str, Any]) -> MoveRecord:
    return MoveRecord(body["workload"], body.get("source"), body["target"], MoveReason(body["reason"]),
                      int(body["started_ms"]), MoveState(body.get("state", "in_flight")),
                      body.get("finished_ms"))


@dataclass
class PlacementTable:
    """Owners, revocations, recent move records and decisions; not thread-safe (the placer's own)."""

    owners: dict[str, Assignment] = field(default_factory=dict)
    revoked: dict[str, set[str]] = field(default_factory=dict)  # camera -> agents that must not run it
    moves: list[MoveRecord] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    token: int = 0
    blocked: list[str] = field(default_factory=list)  # work the last plan could not place or move
    bottlenecks: list[dict[str, Any]] = field(default_factory=list)  # the worst agents, worst first
    advice: str = ""  # the top bottleneck and what to do about it, in plain words

    def observe(self, cameras: Iterable[str], reported: Mapping[str, frozenset[str]],
                online: frozenset[str], now_ms: int, grace_ms: int = 30_000) -> list[str]:
        """Follow the agents' reports; the warnings (a camera reported by two online agents) returned.

        A committed move is applied by each agent when it hears the decision,
        so for a while the reports lag the table: within ``grace_ms`` of an
        assignment the table stands. After it, a camera reported by an agent
        not revoked for it (an online one first) is that agent's, and a camera
        nobody reports has no owner (only then may it be placed afresh).
        An agent that no longer reports a camera it was revoked from is no
        longer revoked (it has dropped it).
        """
        warnings = []
        flying = {r.workload for r in self.moves if r.in_flight}
        for cam in cameras:
            revoked = self.revoked.get(cam, set())
            for agent in list(revoked):
                if agent in reported and cam not in reported[agent]:
                    revoked.discard(agent)
            if not revoked:
                self.revoked.pop(cam, None)
            holders = sorted(a for a, cams in reported.items() if cam in cams and a not in revoked)
            live = [a for a in holders if a in online]
            if len(live) > 1:
                warnings.append(f"camera {cam} is reported by {', '.join(live)}")
            current = self.owners.get(cam)
            if cam in flying or (current is not None and now_ms - current.since_ms < grace_ms):
                continue
            if holders and (current is None or current.agent not in holders):
                # Never leave a reported camera without an owner: the planner would place it afresh with a
                # take-only transaction next to the agent running it. With two reporters (a table lost, a
                # stale report) any of them will do: moves from it go through its own vote.
                self.owners[cam] = Assignment((live or holders)[0], now_ms)
            elif not holders and current is not None and current.agent in reported:
                del self.owners[cam]  # its owner says it does not run it
        return warnings

    def moved(self, camera: str, source: str | None, target: str, now_ms: int, *, revoke: bool) -> None:
        self.owners[camera] = Assignment(target, now_ms)
        if revoke and source is not None:
            self.revoked.setdefault(camera, set()).add(source)
        self.revoked.get(camera, set()).discard(target)

    def placement(self, cameras: Iterable[str]) -> Placement:
        known = set(cameras)
        return Placement({c: a for c, a in self.owners.items() if c in known})

    def recent(self, now_ms: int, window_ms: int) -> tuple[MoveRecord, ...]:
        self.moves = [r for r in self.moves if r.in_flight or now_ms - r.started_ms <= window_ms]
        return tuple(self.moves)

    def decide(self, decision: Mapping[str, Any]) -> None:
        self.decisions = [*self.decisions, dict(decision)][-_KEEP_DECISIONS:]

    def to_json(self, group: str, placer: str, now_ms: int, controls: Mapping[str, Any]) -> dict[str, Any]:
        return {"group": group, "placer": placer, "token": self.token, "updated_ms": now_ms,
                "owners": {c: {"agent": a.agent, "since_ms": a.since_ms}
                           for c, a in sorted(self.owners.items())},
                "revoked": {c: sorted(a) for c, a in sorted(self.revoked.items()) if a},
                "moves": [record_to_json(r) for r in self.moves], "controls": dict(controls),
                "decisions": list(self.decisions), "blocked": list(self.blocked),
                "bottlenecks": list(self.bottlenecks), "advice": self.advice}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PlacementTable:
        """The table a previous placer published (a standby continues from it); ValueError if malformed."""
        try:
            owners = {str(c): Assignment(str(a["agent"]), int(a["since_ms"]))
                      for c, a in dict(body.get("owners", {})).items()}
            revoked = {str(c): {str(x) for x in a} for c, a in dict(body.get("revoked", {})).items()}
            moves = [record_from_json(r) for r in body.get("moves", [])]
            decisions = [dict(d) for d in body.get("decisions", [])][-_KEEP_DECISIONS:]
            return cls(owners, revoked, moves, decisions, int(body.get("token", 0)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed placement table: {exc}") from exc
