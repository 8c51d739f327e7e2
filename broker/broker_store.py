"""What the embedded broker keeps across a restart, in one SQLite file: sessions, queues, retained.

:class:`BrokerStore` is the storage half of the embedded broker's
persistence (:mod:`broker.amqtt_session_store` binds it to amqtt's events):

* **persistent sessions** - client id, user, when it went offline, and its
  subscriptions;
* **queued messages** - QoS 1 and 2 messages that arrived for a persistent
  session while it was offline, in order, until it reconnects (and, on a
  clean broker stop, what was in flight to it);
* **retained messages** - the last retained message of every topic.

Payloads are stored as bytes (edgebus envelopes are binary). The file is
SQLite in WAL mode with ``synchronous=NORMAL``: a commit costs no fsync, a
crash of the process loses nothing committed, a power cut may lose the last
moments but never corrupts the file. It is created private (0600) - it holds
what devices sent.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = BrokerStore(pathlib.Path(tmp) / "broker.sqlite3")
...     store.save_session("cam-1", "cam-1")
...     store.subscribe("cam-1", "edgebus/cam-1/cmd/#", 1)
...     store.queue("cam-1", "edgebus/cam-1/cmd/ota", b"\\x93\\x01", 1)
...     store.retain("edgebus/cam-1/status", b"online", 1)
...     store.commit()
...     state = store.load(now=0.0)
...     store.close()
>>> [(s.client_id, s.subscriptions, [m.payload for m in s.queued]) for s in state.sessions]
[('cam-1', (('edgebus/cam-1/cmd/#', 1),), [b'\\x93\\x01'])]
>>> [(r.topic, r.payload) for r in state.retained]
[('edgebus/cam-1/status', b'online')]
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import StorageError

__all__ = ["SCHEMA_VERSION", "BrokerStore", "StoredMessage", "StoredSession", "StoredState"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY,
    username TEXT,
    disconnected_at REAL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL,
    filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    PRIMARY KEY (client_id, filter)
);
CREATE TABLE IF NOT EXISTS queued (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queued_by_client ON queued (client_id, seq);
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the store keeps it: a queued one, or the retained one of its topic."""

    topic: str
    payload: bytes
    qos: int

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise StorageError(f"stored message on {self.topic!r} has QoS {self.qos!r}")


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A persistent session as it was when the broker stopped."""

    client_id: str
    username: str | None
    disconnected_at: float | None
    subscriptions: tuple[tuple[str, int], ...]
    queued: tuple[StoredMessage, ...]


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything :meth:`BrokerStore.load` found."""

    sessions: tuple[StoredSession, ...]
    retained: tuple[StoredMessage, ...]


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite gives its -wal/-shm the same)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class BrokerStore:
    """The embedded broker's SQLite file. Writes are grouped until :meth:`commit`.

    Not thread-safe: one thread (the broker's event loop) uses it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StorageError(f"{self.path} was written by a newer edgebus (schema "
                                   f"{version}, this one knows {SCHEMA_VERSION}); upgrade "
                                   "edgebus or move the file away")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the broker's store {self.path}: {exc}") from exc
        self._in_transaction = False

    # -- reading (at start) ------------------------------------------------------

    def load(self, now: float, session_expiry: float | None = None) -> StoredState:
        """Every stored session (dropping those offline longer than ``session_expiry`` s) and
        every retained message."""
        try:
            if session_expiry is not None:
                self._write("DELETE FROM sessions WHERE disconnected_at < ?",
                            (now - session_expiry,))
                self._write("DELETE FROM subscriptions WHERE client_id NOT IN "
                            "(SELECT client_id FROM sessions)")
                self._write("DELETE FROM queued WHERE client_id NOT IN "
                            "(SELECT client_id FROM sessions)")
                self.commit()
            sessions = []
            rows = self._db.execute(
                "SELECT client_id, username, disconnected_at FROM sessions ORDER BY client_id")
            for client_id, username, disconnected_at in rows.fetchall():
                subscriptions = tuple(
                    (str(f), int(q)) for f, q in self._db.execute(
                        "SELECT filter, qos FROM subscriptions WHERE client_id = ? ORDER BY filter",
                        (client_id,)))
                queued = tuple(StoredMessage(str(t), bytes(p), int(q)) for t, p, q in
                               self._db.execute("SELECT topic, payload, qos FROM queued WHERE "
                                                "client_id = ? ORDER BY seq", (client_id,)))
                sessions.append(StoredSession(str(client_id), username, disconnected_at,
                                              subscriptions, queued))
            retained = tuple(StoredMessage(str(t), bytes(p), int(q)) for t, p, q in
                             self._db.execute("SELECT topic, payload, qos FROM retained "
                                              "ORDER BY topic"))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the broker's store {self.path}: {exc}") from exc
        return StoredState(tuple(sessions), retained)

    # -- writing (grouped until commit) ----------------------------------------------

    def save_session(self, client_id: str, username: str | None) -> None:
        """A persistent session is connected (created, or back): it is not offline any more."""
        self._write("INSERT INTO sessions (client_id, username, disconnected_at) VALUES (?, ?, NULL) "
                    "ON CONFLICT (client_id) DO UPDATE SET username = excluded.username, "
                    "disconnected_at = NULL", (client_id, username))

    def session_offline(self, client_id: str, at: float) -> None:
        self._write("UPDATE sessions SET disconnected_at = ? WHERE client_id = ?", (at, client_id))

    def forget_session(self, client_id: str) -> None:
        """The session ended (a clean-session connect with its id): drop it and all it had."""
        for table in ("sessions", "subscriptions", "queued"):
            self._write(f"DELETE FROM {table} WHERE client_id = ?", (client_id,))

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> None:
        self._write("INSERT INTO subscriptions (client_id, filter, qos) VALUES (?, ?, ?) "
                    "ON CONFLICT (client_id, filter) DO UPDATE SET qos = excluded.qos",
                    (client_id, topic_filter, qos))

    def unsubscribe(self, client_id: str, topic_filter: str) -> None:
        self._write("DELETE FROM subscriptions WHERE client_id = ? AND filter = ?",
                    (client_id, topic_filter))

    def queue(self, client_id: str, topic: str, payload: bytes, qos: int) -> None:
        """One more message for an offline session, after the ones already queued."""
        self._write("INSERT INTO queued (client_id, topic, payload, qos) VALUES (?, ?, ?, ?)",
                    (client_id, topic, bytes(payload), qos))

    def clear_queue(self, client_id: str) -> None:
        """The session is back and its queue is being sent."""
        self._write("DELETE FROM queued WHERE client_id = ?", (client_id,))

    def replace_queue(self, client_id: str, messages: Iterable[StoredMessage]) -> None:
        """What the session is owed when the broker stops (in flight first, then queued)."""
        self.clear_queue(client_id)
        for message in messages:
            self.queue(client_id, message.topic, message.payload, message.qos)

    def retain(self, topic: str, payload: bytes, qos: int) -> None:
        self._write("INSERT INTO retained (topic, payload, qos) VALUES (?, ?, ?) "
                    "ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, "
                    "qos = excluded.qos", (topic, bytes(payload), qos))

    def clear_retained(self, topic: str) -> None:
        self._write("DELETE FROM retained WHERE topic = ?", (topic,))

    def commit(self) -> None:
        """Make every write since the last commit durable (one transaction)."""
        if not self._in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the broker's store {self.path}: {exc}") from exc
        finally:
            self._in_transaction = self._db.in_transaction

    def close(self) -> None:
        """Commit what is pending and close the file."""
        try:
            self.commit()
        finally:
            self._db.close()

    def _write(self, sql: str, params: tuple[object, ...] = ()) -> None:
        try:
            if not self._in_transaction:
                self._db.execute("BEGIN")
                self._in_transaction = True
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the broker's store {self.path}: {exc}") from exc
