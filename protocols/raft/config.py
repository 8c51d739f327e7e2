"""Tuning knobs and the injected collaborators of a RaftNode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Times are in logical ticks; the driver decides how long a tick is.

    The election timeout is drawn from ``[election_ticks, 2 * election_ticks)``
    each time it is reset, so that split votes do not repeat forever.
    """

    election_ticks: int = 10
    heartbeat_ticks: int = 2
    max_entries_per_append: int = 64
    snapshot_threshold: int = 0  # applied entries beyond the snapshot before compacting; 0: never
    pre_vote: bool = True
    check_quorum: bool = True  # leaders step down without a quorum; followers honour a lease

    def __post_init__(self) -> None:
        if self.election_ticks < 2 or not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need election_ticks >= 2 and 0 < heartbeat_ticks < election_ticks")
        if self.max_entries_per_append < 1 or self.snapshot_threshold < 0:
            raise ValueError("max_entries_per_append must be >= 1 and snapshot_threshold >= 0")


class RandomSource(Protocol):
    """Injected randomness (the core may not import ``random``)."""

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``."""
        ...


class StateMachine(Protocol):
    """The application replicated by Raft. Must be deterministic."""

    def apply(self, command: bytes) -> bytes: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...
