"""Which locks a participant set out to take for which transaction, on disk, so a restart can let go of them.

:class:`~broker.twopc.locking_resource.LockingResource` writes a
transaction's lock names here BEFORE it asks for the first lock and deletes
them once it let go of every one. A participant that crashes in between finds
them on restart: it keeps their (transaction) sessions alive while it is in
doubt, and lets go of them when the decision is applied, instead of leaving
them to lapse with the lease while another transaction waits. One SQLite file,
``synchronous=FULL`` (like :class:`~broker.twopc.participant_store.ParticipantStore`);
``None`` for the path keeps them in memory only (a crash then leaves the
locks to their lease).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from schemas.errors import StorageError, converted

__all__ = ["LockIntentStore"]


class LockIntentStore:
    """Transaction id -> the lock names its prepare takes here (thread-safe)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._mutex = threading.Lock()
        with converted(StorageError, f"cannot open lock intent store {path}", sqlite3.Error, OSError):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None,
                                       check_same_thread=False)
            if path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS lock_intents "
                             "(tx_id TEXT PRIMARY KEY, names TEXT NOT NULL)")

    def load(self) -> dict[str, list[str]]:
        with self._mutex, converted(StorageError, f"cannot read lock intent store {self.path}",
                                    sqlite3.Error, OSError):
            rows = self._db.execute("SELECT tx_id, names FROM lock_intents ORDER BY rowid").fetchall()
        intents: dict[str, list[str]] = {}
        for tx_id, names in rows:
            try:
                value = json.loads(names)
                if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                    raise ValueError("not a list of names")
            except ValueError as exc:
                raise StorageError(f"{self.path}: the lock names of transaction {tx_id!r} are unreadable "
                                   f"({exc}); the locks lapse with their lease") from exc
            intents[str(tx_id)] = value
        return intents

    def put(self, tx_id: str, names: list[str]) -> None:
        """Record (replace) ``names`` for ``tx_id``; returns once it is on disk."""
        with self._mutex, converted(StorageError, f"cannot write lock intent store {self.path}",
                                    sqlite3.Error, OSError):
            self._db.execute("INSERT OR REPLACE INTO lock_intents (tx_id, names) VALUES (?, ?)",
                             (tx_id, json.dumps(names)))

    def delete(self, tx_id: str) -> None:
        with self._mutex, converted(StorageError, f"cannot write lock intent store {self.path}",
                                    sqlite3.Error, OSError):
            self._db.execute("DELETE FROM lock_intents WHERE tx_id = ?", (tx_id,))

    def close(self) -> None:
        with self._mutex:
            self._db.close()
