"""Simulated durable storage: the only state that survives a simulated crash."""

from __future__ import annotations

from protocols.raft.messages import Entry, HardState, PersistentState, Snapshot
from protocols.raft.ready import Ready


class DurableStore:
    """Applies a Ready's persistence part exactly as a real driver must (see protocols.raft.ready)."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = list(rd.entries)
        elif rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.index if self.snapshot else 0
            del self.entries[max(first - base - 1, 0) :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def load(self) -> PersistentState:
        return PersistentState(self.hard_state, self.snapshot, tuple(self.entries))
