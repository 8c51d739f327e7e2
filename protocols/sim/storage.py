"""Simulated durable storage: the only state that survives a simulated crash."""

from __future__ import annotations

from protocols.raft.messages import Entry, HardState, PersistentState, Snapshot
from protocols.raft.ready import Ready


class DurableStore:
    """Applies a Ready's persistence part exactly as a real driver must (see protocols.raft.ready).

    A Ready with ``must_sync`` False is written without an fsync: it sits in the
    page cache until the next synced write carries it to disk (SQLite's WAL
    appends in order), and a crash before that loses it. Every simulated crash
    is a power cut, the harshest case.
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self._unsynced: list[Ready] = []

    def persist(self, rd: Ready) -> None:
        if not rd.must_sync:
            self._unsynced.append(rd)
            return
        self._sync()
        self._write(rd)

    def crash(self) -> None:
        """The machine lost power: what was written without an fsync is gone."""
        self._unsynced.clear()

    def load(self) -> PersistentState:
        self._sync()  # a running machine reads its own page cache
        return PersistentState(self.hard_state, self.snapshot, tuple(self.entries))

    def _sync(self) -> None:
        for rd in self._unsynced:
            self._write(rd)
        self._unsynced.clear()

    def _write(self, rd: Ready) -> None:
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
