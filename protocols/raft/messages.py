"""Raft wire records: log entries, durable state and the peer-to-peer messages.

Every record is a frozen, slotted dataclass so a message cannot change after it
is sent (the simulator duplicates and reorders them). Encoding them for the
wire is the driver's job; nothing here knows about bytes on a socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EntryKind(enum.Enum):
    """What applying an entry means."""

    COMMAND = "command"  # handed to the application state machine
    NOOP = "noop"  # appended by a new leader so it can commit entries of its own term
    CONFIG = "config"  # a new member set, effective as soon as it is appended


@dataclass(frozen=True, slots=True)
class Entry:
    """One slot of the replicated log."""

    term: int
    index: int
    kind: EntryKind = EntryKind.COMMAND
    command: bytes = b""
    client_id: str = ""  # "" means: not de-duplicated
    request_seq: int = 0
    members: tuple[str, ...] = ()  # only for CONFIG entries

    def __post_init__(self) -> None:
        if self.term < 1 or self.index < 1:
            raise ValueError(f"entry term and index start at 1, got term={self.term} index={self.index}")
        if self.kind is EntryKind.CONFIG and not self.members:
            raise ValueError("a config entry needs at least one member")


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before a vote or an acknowledgement leaves the node."""

    term: int = 0
    voted_for: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A compacted prefix of the log: the application's opaque state plus Raft's own.

    ``sessions`` is the client de-duplication table (client id, last request
    seq, its result); it is part of the replicated state, so it travels with
    the snapshot.
    """

    index: int
    term: int
    members: tuple[str, ...]
    data: bytes
    sessions: tuple[tuple[str, int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class PersistentState:
    """Everything a node restarts from; anything not in here is lost on a crash."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """Ask for a (pre-)vote. ``transfer`` marks a leadership hand-over, which may break a lease."""

    src: str
    dst: str
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    src: str
    dst: str
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """Entries after ``prev_index`` (empty: a heartbeat), and the leader's commit index."""

    src: str
    dst: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Success carries the highest index known to match the leader.

    A rejection carries a hint for fast back-off: the term of the follower's
    conflicting entry and the first index it holds of that term (or, when its
    log is too short, ``hint_term`` 0 and its last index + 1).
    """

    src: str
    dst: str
    term: int
    success: bool
    match_index: int = 0
    rejected_index: int = 0
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """InstallSnapshot for a follower whose next entry the leader has compacted away."""

    src: str
    dst: str
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: start an election now, skipping pre-vote."""

    src: str
    dst: str
    term: int


Message = VoteRequest | VoteResponse | AppendRequest | AppendResponse | SnapshotRequest | TimeoutNow
