"""Durable Raft state in SQLite: hard state, log entries and the latest snapshot.

``persist(ready)`` follows the Ready contract (protocols/raft/ready.py) in ONE
transaction, committed with ``synchronous=FULL`` in WAL mode, so when it
returns the vote, term and entries survive a kill -9 or a power cut; only then
may the driver send that Ready's messages and replies.

One exception, etcd's ``MustSync`` rule, decided by the node: a Ready with
``must_sync`` False (its only durable change is a higher commit index) is
committed with ``synchronous=NORMAL``, i.e. written to the WAL without an
fsync. The commit index is volatile state in Raft (a restarted node relearns
it from the leader, and :class:`protocols.raft.RaftNode` restarts from
``max(commit, snapshot)``); WAL frames are appended in order, so a lost
unsynced commit index can only roll back to an older one, never tear an
fsync'd entry or vote. This halves the fsyncs per replicated command.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import msgpack

from protocols.coordination.wire import entry_from_list, entry_to_list
from protocols.raft.messages import Entry, HardState, PersistentState, Snapshot
from protocols.raft.ready import Ready
from schemas.errors import StorageError, converted

__all__ = ["RaftStorage"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    term INTEGER NOT NULL, voted_for TEXT, commit_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    idx INTEGER NOT NULL, term INTEGER NOT NULL, members BLOB NOT NULL,
    data BLOB NOT NULL, sessions BLOB NOT NULL
);
"""


class RaftStorage:
    """One node's durable state; used from the driver thread only."""

    def __init__(self, path: Path) -> None:
        with converted(StorageError, f"cannot open raft storage {path}", sqlite3.Error, OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            # One node owns its log: an exclusive lock keeps a second process with the same data
            # directory out (it gets "database is locked"), and with it SQLite keeps the WAL index in
            # process memory instead of a shared-memory file (less work per transaction). Set before
            # WAL mode, as SQLite requires for that.
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        self.path = path
        self._sync_full = True
        self.fsyncs = 0
        self.unsynced_commits = 0

    def load(self) -> PersistentState:
        """What the node restarts from."""
        with converted(StorageError, f"cannot read raft storage {self.path}", sqlite3.Error):
            hs_row = self._db.execute("SELECT term, voted_for, commit_index FROM hard_state").fetchone()
            snap_row = self._db.execute("SELECT idx, term, members, data, sessions FROM snapshot").fetchone()
            rows = self._db.execute("SELECT body FROM entries ORDER BY idx").fetchall()
        hs = HardState(*hs_row) if hs_row else HardState()
        snap = None
        if snap_row:
            idx, term, members, data, sessions = snap_row
            snap = Snapshot(idx, term, tuple(msgpack.unpackb(members)), bytes(data),
                            tuple((c, q, bytes(r)) for c, q, r in msgpack.unpackb(sessions)))
        entries = tuple(entry_from_list(msgpack.unpackb(body)) for (body,) in rows)
        return PersistentState(hs, snap, entries)

    def persist(self, rd: Ready) -> None:
        """Write ``rd``'s snapshot, entries and hard state in one transaction, fsync'd if ``rd.must_sync``."""
        if rd.snapshot is None and not rd.entries and rd.hard_state is None:
            return
        db = self._db
        must_sync = rd.must_sync
        try:
            if must_sync != self._sync_full:
                db.execute("PRAGMA synchronous=FULL" if must_sync else "PRAGMA synchronous=NORMAL")
                self._sync_full = must_sync
            db.execute("BEGIN IMMEDIATE")
            if rd.snapshot is not None:
                s = rd.snapshot
                db.execute(
                    "INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?, ?, ?)",
                    (s.index, s.term, msgpack.packb(list(s.members)), s.data,
                     msgpack.packb([list(x) for x in s.sessions], use_bin_type=True)),
                )
                db.execute("DELETE FROM entries")
            elif rd.entries:
                db.execute("DELETE FROM entries WHERE idx >= ?", (rd.entries[0].index,))
            if rd.entries:
                db.executemany("INSERT INTO entries VALUES (?, ?)", [(e.index, _pack(e)) for e in rd.entries])
            if rd.hard_state is not None:
                h = rd.hard_state
                db.execute("INSERT OR REPLACE INTO hard_state VALUES (1, ?, ?, ?)",
                           (h.term, h.voted_for, h.commit))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StorageError(f"cannot write raft storage {self.path}: {exc}") from exc
        if must_sync:
            self.fsyncs += 1
        else:
            self.unsynced_commits += 1

    def close(self) -> None:
        self._db.close()


def _pack(e: Entry) -> bytes:
    return msgpack.packb(entry_to_list(e), use_bin_type=True)
