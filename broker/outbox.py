"""A bounded, durable FIFO of messages waiting for the broker's acknowledgement.

Every message a :class:`~broker.session.BusSession` accepts is written here
first and removed only when the broker has acknowledged it (PUBACK for QoS 1,
handed to the socket for QoS 0). A broker outage, a network cut or a killed
process therefore loses nothing that was accepted: the rows are re-sent after
the next connection, in order. Re-sending can duplicate a message whose PUBACK
was lost in the cut; receivers tell duplicates apart by sequence number.

The bound is on messages and on bytes. A message that does not fit is refused
(``put`` returns ``None``) and counted in :attr:`Outbox.dropped`: it was never
accepted, so "nothing accepted is lost" still holds and the loss is visible.

Storage is one SQLite file in WAL mode with ``synchronous=NORMAL``: a row
survives the process being killed; after a power cut the last few hundred
milliseconds of writes may be lost (pass ``durability="power"`` for
``synchronous=FULL`` at the cost of an fsync per write). ``path=None`` keeps
the outbox in memory for processes that need no durability across restarts.

The outbox also keeps the device's sequence counter so that reserving sequence
numbers and queueing the message that carries them commit together.

**End-to-end acknowledgement.** A message that carries sequenced samples names
its :class:`SequenceSpan`. When the session waits for the coordinator's
acknowledgement (:mod:`schemas.stored_ack`), the broker's PUBACK only marks
such a row *delivered* (:meth:`Outbox.mark_delivered`); the row is removed
when an acknowledgement covers it (:meth:`Outbox.release`). When the bounds
are reached, the oldest delivered rows are given up first (the broker has
them; only a broker that loses them as well loses them for good), counted
in :attr:`Outbox.evicted`, before a new message is refused.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.errors import OutboxError, converted
from schemas.stored_ack import StoredAck

__all__ = ["Outbox", "OutboxMessage", "OutboxRow", "OutboxTransaction", "SequenceSpan"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    content_type TEXT,
    stream TEXT,
    epoch INTEGER,
    first_seq INTEGER,
    seq_count INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


#: Columns added after the first release, for outboxes made before them.
_ADDED_COLUMNS = (("stream", "TEXT"), ("epoch", "INTEGER"), ("first_seq", "INTEGER"),
                  ("seq_count", "INTEGER"), ("delivered", "INTEGER NOT NULL DEFAULT 0"))


@dataclass(frozen=True, slots=True)
class SequenceSpan:
    """The sequence numbers a message carries: ``count`` from ``first_seq`` of ``stream`` in ``epoch``.

    ``stream`` is named as in :class:`~schemas.stored_ack.StoredAck` (``metrics``,
    ``detections/{camera}``).
    """

    stream: str
    epoch: int
    first_seq: int
    count: int

    def __post_init__(self) -> None:
        if not self.stream or self.epoch < 0 or self.first_seq < 0 or self.count < 1:
            raise ValueError(f"invalid sequence span {self!r}")


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One MQTT publication as the outbox stores it (``span``: the samples it carries, if any)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    content_type: str | None = None
    span: SequenceSpan | None = None

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos!r}")
        if not isinstance(self.payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(self.payload).__name__}")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A stored message and its position in the queue."""

    id: int
    message: OutboxMessage = field(compare=False)


class OutboxTransaction:
    """Reserve sequence numbers and queue messages atomically (see :meth:`Outbox.transaction`)."""

    def __init__(self, outbox: Outbox, conn: sqlite3.Connection) -> None:
        self._outbox = outbox
        self._conn = conn
        self.accepted: list[int] = []

    def reserve_sequence(self, count: int, key: str = "next_seq") -> int:
        """Return the first of ``count`` consecutive, never reused numbers of counter ``key``.

        The default counter numbers the device's metrics; other streams (one per
        camera) keep their own under their own key.
        """
        if count < 1:
            raise ValueError(f"count must be positive, not {count}")
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        first = int(row[0]) if row else 0
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, first + count),
        )
        return first

    def put(self, message: OutboxMessage) -> int | None:
        """Queue ``message``; its row id, or ``None`` when the bound refused it."""
        row_id = self._outbox._insert(self._conn, message)
        if row_id is not None:
            self.accepted.append(row_id)
        return row_id


class Outbox:
    """Durable, bounded FIFO of outgoing messages; safe to share between threads."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        max_messages: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        durability: Literal["process", "power"] = "process",
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("outbox bounds must be positive")
        self.path = Path(path) if path is not None else None
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.dropped = 0
        #: Delivered rows given up unconfirmed to make room (see the module docstring).
        self.evicted = 0
        #: Rows an end-to-end acknowledgement removed.
        self.released = 0
        self._lock = threading.RLock()
        #: Rows carrying samples, per stream, oldest first: row id -> span.
        self._spans: dict[str, dict[int, SequenceSpan]] = {}
        self._pending_spans: list[tuple[int, SequenceSpan]] = []
        target = ":memory:" if self.path is None else str(self.path)
        with converted(OutboxError, f"cannot open outbox {target}", sqlite3.Error, OSError):
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            if self.path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if durability == "power" else "NORMAL"
            self._conn.execute(f"PRAGMA synchronous={sync}")
            self._conn.executescript(_SCHEMA)
            have = {r[1] for r in self._conn.execute("PRAGMA table_info(outbox)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    self._conn.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")
            count, size = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) FROM outbox"
            ).fetchone()
            for row_id, stream, epoch, first, n in self._conn.execute(
                    "SELECT id, stream, epoch, first_seq, seq_count FROM outbox "
                    "WHERE stream IS NOT NULL ORDER BY id"):
                self._spans.setdefault(stream, {})[int(row_id)] = SequenceSpan(stream, epoch, first, n)
        self._count = int(count)
        self._bytes = int(size)
        if self._count:
            logger.info("outbox %s holds %d unsent messages from before", target, self._count)

    # -- producer side -------------------------------------------------

    def put(self, message: OutboxMessage) -> int | None:
        """Queue ``message`` durably; its row id, or ``None`` if a bound refused it."""
        with self.transaction() as tx:
            return tx.put(message)

    @contextmanager
    def transaction(self) -> Iterator[OutboxTransaction]:
        """Group sequence reservations and puts into one atomic commit."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox is not writable: {exc}") from exc
            tx = OutboxTransaction(self, self._conn)
            count, size = self._count, self._bytes
            try:
                yield tx
                self._conn.execute("COMMIT")
                self._index_pending()
            except sqlite3.Error as exc:
                self._rollback(count, size)
                raise OutboxError(f"outbox write failed: {exc}") from exc
            except BaseException:
                self._rollback(count, size)
                raise

    def _index_pending(self) -> None:
        for row_id, span in self._pending_spans:
            self._spans.setdefault(span.stream, {})[row_id] = span
        self._pending_spans.clear()

    def _rollback(self, count: int, size: int) -> None:
        self._count, self._bytes = count, size
        self._pending_spans.clear()
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("outbox rollback failed")

    def _insert(self, conn: sqlite3.Connection, message: OutboxMessage) -> int | None:
        size = len(message.payload) + len(message.topic.encode())
        if self._count + 1 > self.max_messages or self._bytes + size > self.max_bytes:
            self._evict_delivered(conn, size)
        if self._count + 1 > self.max_messages or self._bytes + size > self.max_bytes:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "outbox full (%d messages, %d bytes): refused a message for %s; %d refused so far",
                    self._count, self._bytes, message.topic, self.dropped,
                )
            return None
        span = message.span
        cur = conn.execute(
            "INSERT INTO outbox(topic, payload, qos, retain, content_type, stream, epoch, first_seq, "
            "seq_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message.topic, message.payload, message.qos, int(message.retain),
             message.content_type, *((span.stream, span.epoch, span.first_seq, span.count)
                                     if span is not None else (None, None, None, None))),
        )
        self._count += 1
        self._bytes += size
        row_id = int(cur.lastrowid or 0)
        if span is not None:
            self._pending_spans.append((row_id, span))
        return row_id

    def _evict_delivered(self, conn: sqlite3.Connection, size: int) -> None:
        """Give up the oldest delivered rows until a message of ``size`` bytes fits (inside a transaction)."""
        rows = conn.execute(
            "SELECT id, stream, LENGTH(payload) + LENGTH(topic) FROM outbox WHERE delivered = 1 ORDER BY id"
        )
        evicted: list[tuple[int, str | None]] = []
        count, used = self._count, self._bytes
        for row_id, stream, row_size in rows:
            if count + 1 <= self.max_messages and used + size <= self.max_bytes:
                break
            evicted.append((int(row_id), stream))
            count -= 1
            used -= int(row_size)
        if not evicted:
            return
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(row_id,) for row_id, _ in evicted])
        self._count, self._bytes = count, used
        for row_id, stream in evicted:
            if stream is not None:
                self._spans.get(stream, {}).pop(row_id, None)
        self.evicted += len(evicted)
        logger.warning("outbox full: gave up %d delivered but unconfirmed messages (%d so far); the "
                       "coordinator counts any of them the broker lost as missing",
                       len(evicted), self.evicted)

    # -- sender side ---------------------------------------------------

    def peek(self, after_id: int = 0, limit: int = 100) -> list[OutboxRow]:
        """The oldest ``limit`` rows with an id greater than ``after_id``, oldest first."""
        with self._lock, converted(OutboxError, "outbox read failed", sqlite3.Error):
            rows = self._conn.execute(
                "SELECT id, topic, payload, qos, retain, content_type, stream, epoch, first_seq, "
                "seq_count FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [self._row(r) for r in rows]

    def rows(self, row_ids: list[int]) -> list[OutboxRow]:
        """The rows with these ids that are still queued, oldest first."""
        found: list[OutboxRow] = []
        with self._lock, converted(OutboxError, "outbox read failed", sqlite3.Error):
            for row_id in sorted(row_ids):
                r = self._conn.execute(
                    "SELECT id, topic, payload, qos, retain, content_type, stream, epoch, first_seq, "
                    "seq_count FROM outbox WHERE id = ?", (row_id,)).fetchone()
                if r is not None:
                    found.append(self._row(r))
        return found

    @staticmethod
    def _row(r: Any) -> OutboxRow:
        span = None if r[6] is None else SequenceSpan(str(r[6]), int(r[7]), int(r[8]), int(r[9]))
        return OutboxRow(int(r[0]), OutboxMessage(r[1], bytes(r[2]), int(r[3]), bool(r[4]), r[5], span))

    def ack(self, row_ids: list[int]) -> None:
        """Remove delivered rows; unknown ids are ignored (an ack can arrive twice)."""
        if not row_ids:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                removed = 0
                freed = 0
                for row_id in row_ids:
                    row = self._conn.execute(
                        "SELECT LENGTH(payload) + LENGTH(topic), stream FROM outbox WHERE id = ?",
                        (row_id,),
                    ).fetchone()
                    if row is None:
                        continue
                    self._conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                    removed += 1
                    freed += int(row[0])
                    if row[1] is not None:
                        self._spans.get(row[1], {}).pop(row_id, None)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(self._count, self._bytes)
                raise OutboxError(f"outbox delete failed: {exc}") from exc
            self._count -= removed
            self._bytes -= freed

    def mark_delivered(self, row_ids: list[int]) -> None:
        """Note the broker's PUBACK for rows that stay until an end-to-end acknowledgement."""
        if not row_ids:
            return
        with self._lock, converted(OutboxError, "outbox update failed", sqlite3.Error):
            self._conn.executemany("UPDATE outbox SET delivered = 1 WHERE id = ?", [(i,) for i in row_ids])

    def release(self, ack: StoredAck) -> list[int]:
        """Remove the rows whose samples ``ack`` says are stored; their ids."""
        with self._lock:
            covered: list[int] = []
            for stream, stream_ack in ack.streams.items():
                top = stream_ack.stored[-1][1] if stream_ack.stored else 0
                for row_id, span in self._spans.get(stream, {}).items():
                    if span.epoch == stream_ack.epoch and span.first_seq >= top:
                        break  # numbers only grow within an epoch: nothing later is covered
                    if stream_ack.covers(span.epoch, span.first_seq, span.count):
                        covered.append(row_id)
            self.ack(covered)
            self.released += len(covered)
        return covered

    def awaiting(self) -> int:
        """Rows carrying samples still waiting for an end-to-end acknowledgement."""
        with self._lock:
            return sum(len(rows) for rows in self._spans.values())

    def meta(self, key: str) -> int | None:
        """A stored integer (sequence epoch and the like), or ``None``."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def set_meta(self, key: str, value: int) -> None:
        """Store ``value`` under ``key``, replacing what was there."""
        with self._lock, converted(OutboxError, "outbox update failed", sqlite3.Error):
            self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def set_meta_default(self, key: str, value: int) -> int:
        """Store ``value`` under ``key`` unless a value is there; return the stored value."""
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Payload and topic bytes currently queued."""
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._conn.close()
