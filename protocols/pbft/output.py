"""What a replica hands its driver: frames to send and events to act on (the driver does the I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.pbft.messages import Evidence, PreparedProof, Signed

BROADCAST = None  # a Send to every other replica


@dataclass(frozen=True, slots=True)
class Send:
    dst: str | None  # a replica or client id; None: every other replica
    frame: bytes


@dataclass(frozen=True, slots=True)
class Executed:
    """Sequence number ``seq`` ran; ``results`` are the requests it executed (duplicates skipped)."""

    seq: int
    digest: bytes
    results: tuple[tuple[str, int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """``offender`` signed two conflicting statements; from now on its messages are ignored."""

    offender: str
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class ViewEntered:
    view: int
    primary: str


@dataclass(frozen=True, slots=True)
class StateInstalled:
    """Caught up by state transfer to the stable checkpoint at ``seq`` (sequence numbers skipped)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """An incoming frame refused (the driver keeps a dead-letter record); never counted to a quorum."""

    reason: str
    sender: str | None


Event = Executed | Quarantined | ViewEntered | StateInstalled | Dropped


@dataclass(slots=True)
class Output:
    sends: list[Send] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Durable:
    """What a replica must keep across a restart so that it never contradicts what it signed.

    ``votes`` are its own (kind, view, seq) -> digest; ``prepared`` its prepared
    certificates above the stable checkpoint (a view change must still report them).
    """

    view: int = 0
    in_view_change: bool = False
    stable_seq: int = 0
    stable_snapshot: bytes = b""
    stable_proof: tuple[Signed, ...] = ()
    votes: tuple[tuple[tuple[str, int, int], bytes], ...] = ()
    prepared: tuple[PreparedProof, ...] = ()
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    id: str
    view: int
    primary: str
    in_view_change: bool
    stable_checkpoint: int
    last_executed: int
    quarantined: tuple[str, ...]
    dropped: tuple[tuple[str, int], ...]
