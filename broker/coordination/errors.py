"""Errors of the coordination driver and clients (all :class:`schemas.errors.BusError`)."""

from __future__ import annotations

from schemas.errors import BusError

__all__ = ["AdminRefused", "CoordinationError", "CoordinationTimeout", "DeadlockVictim", "LockUnavailable"]


class CoordinationError(BusError):
    """A Raft group or the lock service could not do what was asked."""


class CoordinationTimeout(CoordinationError):
    """No answer in time: no leader reachable, or the lock stayed held by someone else."""


class AdminRefused(CoordinationError):
    """The leader refused a membership change or transfer; ``reason`` says why and what to do instead.

    Raised at once for a refusal that retrying cannot fix (removing the leader
    itself: transfer leadership first), and at the deadline for one that
    persisted (another change still uncommitted, a target that never caught up).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LockUnavailable(CoordinationError):
    """The lock was refused for good: busy (no wait), deadlock victim, or the session is gone."""


class DeadlockVictim(LockUnavailable):
    """This session's wait closed (or sat in) a wait-for cycle and it was chosen to break it.

    Its waits were cancelled; locks it already holds are still held. Release
    them (or some of them) and retry, or give up.
    """
