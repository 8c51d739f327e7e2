"""A participant's durable records in one SQLite file: a yes vote leaves only after its record is on disk.

One row per transaction, the value :func:`protocols.twopc.encode_participant_record`'s
bytes. ``synchronous=FULL`` with the WAL journal: a commit returns after the
fsync, which is what "durable before the vote" needs. Unreadable rows are
refused at load with the file and the transaction named (a participant that
silently forgot a prepared record could let the group commit what it lost).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocols.twopc import ParticipantRecord, decode_participant_record, encode_participant_record
from schemas.errors import CodecError, StorageError, converted

__all__ = ["ParticipantStore"]


class ParticipantStore:
    """Open (creating if needed) the records of one participant; use from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with converted(StorageError, f"cannot open participant store {path}", sqlite3.Error, OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS tx_records "
                             "(tx_id TEXT PRIMARY KEY, body BLOB NOT NULL)")

    def load(self) -> list[ParticipantRecord]:
        with converted(StorageError, f"cannot read participant store {self.path}", sqlite3.Error, OSError):
            rows = self._db.execute("SELECT tx_id, body FROM tx_records ORDER BY rowid").fetchall()
        records = []
        for tx_id, body in rows:
            try:
                records.append(decode_participant_record(bytes(body)))
            except CodecError as exc:
                raise StorageError(f"{self.path}: the record of transaction {tx_id!r} is unreadable "
                                   f"({exc}); restore the file or resolve the transaction by hand") from exc
        return records

    def put(self, record: ParticipantRecord) -> None:
        """Write (replace) ``record``; returns once it is on disk."""
        with converted(StorageError, f"cannot write participant store {self.path}", sqlite3.Error, OSError):
            self._db.execute("INSERT OR REPLACE INTO tx_records (tx_id, body) VALUES (?, ?)",
                             (record.tx_id, encode_participant_record(record)))

    def delete(self, tx_id: str) -> None:
        with converted(StorageError, f"cannot write participant store {self.path}", sqlite3.Error, OSError):
            self._db.execute("DELETE FROM tx_records WHERE tx_id = ?", (tx_id,))

    def close(self) -> None:
        self._db.close()
