"""What happened in a simulated run, recorded for the checkers to judge afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.raft.messages import Entry
from protocols.raft.ready import AppliedEntry


@dataclass(frozen=True, slots=True)
class LogView:
    """A node's log at one instant: the compacted prefix boundary and the entries after it."""

    node: str
    snapshot_index: int
    snapshot_term: int
    entries: tuple[Entry, ...]

    def term_at(self, index: int) -> int | None:
        if index == self.snapshot_index:
            return self.snapshot_term
        i = index - self.snapshot_index - 1
        return self.entries[i].term if 0 <= i < len(self.entries) else None


@dataclass(frozen=True, slots=True)
class Election:
    time: int
    term: int
    node: str
    log: LogView


@dataclass(frozen=True, slots=True)
class Applied:
    time: int
    node: str
    incarnation: int
    entry: AppliedEntry


@dataclass(frozen=True, slots=True)
class Ack:
    """A client was told its command was applied, with this result."""

    time: int
    client_id: str
    request_seq: int
    command: bytes
    result: bytes


@dataclass
class History:
    elections: list[Election] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    submitted: set[bytes] = field(default_factory=set)
    # (node, incarnation, index) of every snapshot a node persisted: applying may jump past it
    snapshot_installs: set[tuple[str, int, int]] = field(default_factory=set)
    checkpoints: list[tuple[int, list[LogView]]] = field(default_factory=list)
    faults: list[tuple[int, str]] = field(default_factory=list)
    final_register: list[bytes] = field(default_factory=list)
    final_node: str = ""
    liveness_probe_acked_at: int | None = None
    liveness_probe_sent_at: int = 0
