"""What applying a lock command produces: the caller's answer plus events for others.

The answer (:class:`LockResult`) goes back to the client that sent the command.
The events go to whoever else must learn something: a waiter granted a lock
because someone released it, a session told its wait was cancelled, the
deadlock topic. The driver publishes them; the state machine only lists them,
in a deterministic order, so every replica lists the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.errors import LockError

__all__ = [
    "CancelReason",
    "DeadlockEvent",
    "Granted",
    "LockEvent",
    "LockResult",
    "LockStatus",
    "ReleaseReason",
    "Released",
    "SessionExpired",
    "WaitCancelled",
]


class LockStatus(StrEnum):
    """The outcome of one command for the client that sent it."""

    OK = "ok"  # session opened / kept alive / closed, wait cancelled, tick applied
    GRANTED = "granted"  # the lock is yours now: token and lease deadline are set
    ALREADY_HELD = "already_held"  # you hold it already: same token, nothing changed
    QUEUED = "queued"  # you wait; a Granted event will name you later (or a WaitCancelled)
    BUSY = "busy"  # held by another session and you asked not to wait
    RELEASED = "released"
    DEADLOCK = "deadlock"  # your wait would close a cycle and you were chosen as the victim
    NOT_HOLDER = "not_holder"  # release of a lock you do not hold (or no longer hold)
    STALE_TOKEN = "stale_token"  # you hold it, but under a newer token than the one you sent
    NOT_WAITING = "not_waiting"
    NO_SESSION = "no_session"  # unknown, closed or expired session: open a new one
    SESSION_EXISTS = "session_exists"
    NOT_OWNER = "not_owner"  # the session belongs to another identity (the one that opened it)


class ReleaseReason(StrEnum):
    RELEASED = "released"
    SESSION_CLOSED = "session_closed"
    SESSION_EXPIRED = "session_expired"


class CancelReason(StrEnum):
    CANCELLED = "cancelled"
    DEADLOCK = "deadlock"
    SESSION_CLOSED = "session_closed"
    SESSION_EXPIRED = "session_expired"


@dataclass(frozen=True, slots=True)
class Granted:
    """``session_id`` holds ``lock_name`` under ``token``; its lease ends at ``lease_deadline_ms``."""

    session_id: str
    lock_name: str
    token: int
    lease_deadline_ms: int


@dataclass(frozen=True, slots=True)
class Released:
    session_id: str
    lock_name: str
    token: int
    reason: ReleaseReason


@dataclass(frozen=True, slots=True)
class WaitCancelled:
    session_id: str
    lock_name: str
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class SessionExpired:
    session_id: str
    lease_deadline_ms: int


@dataclass(frozen=True, slots=True)
class DeadlockEvent:
    """A wait-for cycle was found and broken by cancelling ``victim``'s waits.

    ``cycle[i]`` waits for ``cycle[i + 1]`` (and the last for the first) through
    ``locks[i]``; the cycle starts at the session whose acquire closed it.
    """

    cycle: tuple[str, ...]
    locks: tuple[str, ...]
    victim: str
    now_ms: int

    def __post_init__(self) -> None:
        if len(self.cycle) < 2 or len(self.cycle) != len(self.locks) or self.victim not in self.cycle:
            raise LockError(f"malformed deadlock event: {self!r}")


LockEvent = Granted | Released | WaitCancelled | SessionExpired | DeadlockEvent


@dataclass(frozen=True, slots=True)
class LockResult:
    """The answer to one command; ``events`` lists everything else it caused, in order."""

    status: LockStatus
    now_ms: int
    token: int | None = None
    lease_deadline_ms: int | None = None
    events: tuple[LockEvent, ...] = ()

    def __post_init__(self) -> None:
        holds = self.status in (LockStatus.GRANTED, LockStatus.ALREADY_HELD)
        if holds != (self.token is not None):
            raise LockError(f"{self.status} result must carry a token exactly when a lock is held")
        if holds and self.lease_deadline_ms is None:
            raise LockError(f"{self.status} result must carry the lease deadline")

    @property
    def deadlocks(self) -> tuple[DeadlockEvent, ...]:
        return tuple(e for e in self.events if isinstance(e, DeadlockEvent))
