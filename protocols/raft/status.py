"""A read-only view of a node for operators (``edge-bus raft status``) and tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftStatus:
    node: str
    role: str
    term: int
    leader: str | None
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    members: tuple[str, ...]
