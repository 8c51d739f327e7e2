"""``[store] type = "sql"``: SQLite (the default, zero set-up) or PostgreSQL through SQLAlchemy 2.

Configuration (every key optional)::

    [store]
    type = "sql"
    url = "postgresql://edgebus@db.local/edgebus"  # default: sqlite:///{data_dir}/coordinator.db
    schema = "edgebus"        # PostgreSQL only: tables live in this schema (created by migrate)
    busy_timeout_ms = 5000    # SQLite only: how long a writer waits for a lock

    [store.retention]         # see coordinator/store/config.py
    raw_days = 7
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.util import CommandError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

from broker.config_values import check_section_keys
from coordinator.store import migrate as migrations
from coordinator.store import tables as t
from coordinator.store.base import Store, register_store
from coordinator.store.blocks import MAX_TIME_SPAN_MS, decode_block
from coordinator.store.config import RetentionConfig, number, text
from coordinator.store.records import (
    AnomalyRecord,
    DeadLetterRecord,
    DetectionRecord,
    DeviceInfo,
    RetentionResult,
    Rollup,
    SampleRecord,
    StoredAnomaly,
    StoredEvent,
    WriteBatch,
    WriteResult,
)
from coordinator.store.retention import apply_retention
from coordinator.store.series import Series, series_of_blocks
from coordinator.store.sql_engine import create_engine, normalise_url, redacted
from coordinator.store.sql_write import in_chunks, upsert, write_batch, write_sequence_state
from schemas.audit import AuditRecord
from schemas.errors import ConfigError, StoreError
from schemas.sequence import DeviceSequence

__all__ = ["DEFAULT_DB_NAME", "SqlStore"]

logger = logging.getLogger(__name__)

DEFAULT_DB_NAME = "coordinator.db"
_KEYS = {"type", "url", "schema", "busy_timeout_ms", "retention"}


def _between(column: sa.ColumnElement[int], since_ms: int | None, until_ms: int | None) -> list[Any]:
    """Half-open ``[since_ms, until_ms)`` conditions on ``column``."""
    return ([column >= since_ms] if since_ms is not None else []) + \
           ([column < until_ms] if until_ms is not None else [])


@register_store
class SqlStore(Store):
    """The coordinator's history in SQLite or PostgreSQL; safe to share between threads."""

    TYPE = "sql"

    def __init__(self, engine: Engine, *, schema: str | None = None,
                 retention: RetentionConfig | None = None) -> None:
        self.engine = engine
        self.schema = schema
        self.retention = retention or RetentionConfig()
        self.dialect = engine.dialect.name

    # -- opening ---------------------------------------------------------

    @classmethod
    def open(cls, url: str | None = None, *, data_dir: Path = Path("data"), schema: str | None = None,
             retention: RetentionConfig | None = None, busy_timeout_ms: int = 5000) -> SqlStore:
        """Connect to ``url`` (default SQLite in ``data_dir``); call :meth:`migrate` before use."""
        parsed = normalise_url(url or f"sqlite:///{data_dir / DEFAULT_DB_NAME}")
        engine = create_engine(parsed, schema=schema, busy_timeout_ms=busy_timeout_ms)
        logger.info("store: %s%s", redacted(parsed), f" schema {schema}" if schema else "")
        return cls(engine, schema=schema, retention=retention)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], *, data_dir: Path) -> SqlStore:
        check_section_keys("store", section, _KEYS)
        url = text("store", "url", section, None)
        if url is not None and not url.strip():
            raise ConfigError("store.url must not be empty; leave it out for SQLite in the data directory")
        return cls.open(url, data_dir=data_dir, schema=text("store", "schema", section, None),
                        retention=RetentionConfig.from_mapping(section.get("retention")),
                        busy_timeout_ms=int(number("store", "busy_timeout_ms", section, 5000, integer=True)))

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (SQLAlchemyError, CommandError) as exc:
            # Operational: locked, unreachable, disk full; a dropped connection is the same.
            transient = isinstance(exc, OperationalError | InterfaceError) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated)
            raise StoreError(f"store: cannot {what} ({redacted(self.engine.url)}): {exc}",
                             transient=transient) from exc

    def migrate(self) -> None:
        with self._guard("migrate the schema"):
            if self.schema is not None:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            migrations.upgrade(self.engine)

    def schema_revision(self) -> str | None:
        with self._guard("read the schema revision"):
            return migrations.current_revision(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------

    def write_batch(self, batch: WriteBatch) -> WriteResult:
        if not batch:
            return WriteResult()
        with self._guard("write a batch"), self.engine.begin() as conn:
            return write_batch(conn, batch)

    shared_transactions = True

    def write_batches(self, batches: Sequence[WriteBatch]) -> list[WriteResult]:
        """Each batch as :meth:`write_batch` writes it, all in one transaction (one commit)."""
        if not any(batches):
            return [WriteResult() for _ in batches]
        with self._guard("write batches"), self.engine.begin() as conn:
            return [write_batch(conn, batch) if batch else WriteResult() for batch in batches]

    def save_sequence_state(self, states: Mapping[str, DeviceSequence]) -> None:
        with self._guard("save sequence state"), self.engine.begin() as conn:
            write_sequence_state(conn, states)

    def forget_sequence_state(self, streams: Sequence[str]) -> None:
        s = t.sequence_state
        wanted = sorted(set(streams))
        with self._guard("forget sequence state"), self.engine.begin() as conn:
            for chunk in in_chunks(wanted):
                conn.execute(sa.delete(s).where(s.c.stream.in_(chunk)))

    def save_detector_states(self, states: Mapping[str, bytes], owner: str, time_ms: int) -> None:
        if not states:
            return
        rows = [{"device": device, "state": blob, "time_ms": time_ms, "owner": owner[:128]}
                for device, blob in states.items()]
        with self._guard("save detector states"), self.engine.begin() as conn:
            upsert(conn, t.detector_states, rows, "device",
                   lambda ex: {"state": ex.state, "time_ms": ex.time_ms, "owner": ex.owner})

    def load_detector_states(self, devices: Sequence[str]) -> dict[str, bytes]:
        d = t.detector_states
        wanted = sorted(set(devices))
        found: dict[str, bytes] = {}
        for chunk in in_chunks(wanted):
            query = sa.select(d.c.device, d.c.state).where(d.c.device.in_(chunk))
            found.update((device, bytes(state)) for device, state in self._rows("detector states", query))
        return found

    def apply_retention(self, now_ms: int) -> RetentionResult:
        with self._guard("apply retention"), self.engine.begin() as conn:
            return apply_retention(conn, self.retention, now_ms)

    # -- reading ---------------------------------------------------------

    def _rows(self, what: str, query: sa.Executable) -> list[Any]:
        with self._guard(f"read {what}"), self.engine.connect() as conn:
            return list(conn.execute(query))

    def count_samples(self, device: str | None = None) -> int:
        b = t.metric_blocks
        query = sa.select(sa.func.coalesce(sa.func.sum(b.c["count"]), 0))
        if device is not None:
            query = query.where(b.c.device == device)
        return int(self._rows("samples", query)[0][0])

    def samples(self, device: str, name: str, since_ms: int | None = None,
                until_ms: int | None = None) -> list[SampleRecord]:
        b = t.metric_blocks
        where = [b.c.device == device]
        if since_ms is not None:  # a block starts at most MAX_TIME_SPAN_MS before its newest sample
            where.append(b.c.first_ms >= since_ms - MAX_TIME_SPAN_MS)
        if until_ms is not None:
            where.append(b.c.first_ms < until_ms)
        query = sa.select(b.c.device, b.c.epoch, b.c.first_seq, b.c.body).where(*where)
        low = -math.inf if since_ms is None else since_ms
        high = math.inf if until_ms is None else until_ms
        found = [SampleRecord(device, epoch, seq, time_ms, name, value)
                 for _, epoch, first_seq, body in self._rows("samples", query)
                 for seq, time_ms, metric, value in decode_block(device, epoch, first_seq, body).samples()
                 if metric == name and low <= time_ms < high]
        found.sort(key=lambda s: (s.time_ms, s.epoch, s.seq))
        return found

    def rollups(self, device: str, name: str, since_ms: int | None = None,
                until_ms: int | None = None) -> list[Rollup]:
        r = t.metric_rollups
        query = (sa.select(r.c.device, r.c.name, r.c.interval_s, r.c.bucket_ms, r.c["count"], r.c.avg,
                           r.c.min, r.c.max)
                 .where(r.c.device == device, r.c.name == name, *_between(r.c.bucket_ms, since_ms, until_ms))
                 .order_by(r.c.bucket_ms, r.c.interval_s))
        return [Rollup(*row) for row in self._rows("rollups", query)]

    def detections(self, device: str, camera: str | None = None, since_ms: int | None = None,
                   until_ms: int | None = None) -> list[DetectionRecord]:
        d = t.detections
        where = [d.c.device == device, *_between(d.c.time_ms, since_ms, until_ms)]
        if camera is not None:
            where.append(d.c.camera == camera)
        query = sa.select(d).where(*where).order_by(d.c.time_ms, d.c.camera, d.c.epoch, d.c.seq, d.c.idx)
        return [DetectionRecord(r.device, r.camera, r.epoch, r.seq, r.time_ms, r.label, r.confidence,
                                (r.x1, r.y1, r.x2, r.y2), r.track_id)
                for r in self._rows("detections", query)]

    def events(self, device: str, camera: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        e = t.events
        where = [e.c.device == device] + ([e.c.camera == camera] if camera is not None else [])
        query = sa.select(e.c.payload).where(*where).order_by(e.c.time_ms.desc(), e.c.id.desc()).limit(limit)
        return [dict(row[0]) for row in self._rows("events", query)]

    def births(self, device: str) -> list[dict[str, Any]]:
        b = t.births
        query = sa.select(b.c.payload).where(b.c.device == device).order_by(b.c.time_ms, b.c.id)
        return [dict(row[0]) for row in self._rows("births", query)]

    def devices(self) -> list[DeviceInfo]:
        query = sa.select(t.devices).order_by(t.devices.c.id)
        return [DeviceInfo(*row) for row in self._rows("devices", query)]

    def dead_letters(self, limit: int = 100) -> list[DeadLetterRecord]:
        d = t.dead_letters
        query = (sa.select(d.c.received_ms, d.c.topic, d.c.reason, d.c.error, d.c.payload)
                 .order_by(d.c.id.desc()).limit(limit))
        return [DeadLetterRecord(r[0], r[1], r[2], r[3], bytes(r[4]))
                for r in self._rows("dead letters", query)]

    def anomalies(self, device: str | None = None, metric: str | None = None, since_ms: int | None = None,
                  limit: int = 100) -> list[AnomalyRecord]:
        a = t.anomalies
        where = _between(a.c.time_ms, since_ms, None)
        if device is not None:
            where.append(a.c.device == device)
        if metric is not None:
            where.append(a.c.metric == metric)
        query = (sa.select(a.c.device, a.c.metric, a.c.time_ms, a.c.score, a.c.value, a.c.threshold, a.c.low,
                           a.c.high, a.c.explanation, a.c.severity, a.c.kind, a.c.calibrated)
                 .where(*where).order_by(a.c.time_ms.desc(), a.c.id.desc()).limit(limit))
        return [AnomalyRecord(*row) for row in self._rows("anomalies", query)]

    # -- the HTTP API's pages --------------------------------------------

    def series(self, device: str, name: str, since_ms: int | None = None,
               until_ms: int | None = None) -> Series:
        b = t.metric_blocks
        where = [b.c.device == device]
        if since_ms is not None:  # a block starts at most MAX_TIME_SPAN_MS before its newest sample
            where.append(b.c.first_ms >= since_ms - MAX_TIME_SPAN_MS)
            where.append(b.c.last_ms >= since_ms)
        if until_ms is not None:
            where.append(b.c.first_ms < until_ms)
        query = sa.select(b.c.epoch, b.c.first_seq, b.c.body).where(*where)
        rows = self._rows("samples", query)
        return series_of_blocks(((f"{device}/{epoch}/{first_seq}", body) for epoch, first_seq, body in rows),
                                name, since_ms, until_ms)

    def iter_samples(self, device: str, since_ms: int | None = None, until_ms: int | None = None,
                     metric: str | None = None) -> Iterator[SampleRecord]:
        b = t.metric_blocks
        bounds = self._rows("samples", sa.select(sa.func.min(b.c.first_ms), sa.func.max(b.c.first_ms))
                            .where(b.c.device == device))
        first, last = bounds[0] if bounds else (None, None)
        if first is None or last is None:
            return
        start = first if since_ms is None else max(first, since_ms - MAX_TIME_SPAN_MS)
        stop = last + 1 if until_ms is None else min(last + 1, until_ms)
        low = -math.inf if since_ms is None else since_ms
        high = math.inf if until_ms is None else until_ms
        while start < stop:
            end = start + MAX_TIME_SPAN_MS
            query = (sa.select(b.c.epoch, b.c.first_seq, b.c.body)
                     .where(b.c.device == device, b.c.first_ms >= start, b.c.first_ms < end))
            found = [SampleRecord(device, epoch, seq, time_ms, name, value)
                     for epoch, first_seq, body in self._rows("samples", query)
                     for seq, time_ms, name, value in decode_block(device, epoch, first_seq, body).samples()
                     if (metric is None or name == metric) and low <= time_ms < high]
            found.sort(key=lambda s: (s.time_ms, s.name, s.epoch, s.seq))
            yield from found
            start = end

    def metric_names(self, device: str) -> list[str]:
        b = t.metric_blocks
        newest = sa.select(sa.func.max(b.c.last_ms)).where(b.c.device == device).scalar_subquery()
        query = (sa.select(b.c.epoch, b.c.first_seq, b.c.body)
                 .where(b.c.device == device, b.c.first_ms >= newest - MAX_TIME_SPAN_MS))
        names: dict[str, None] = {}
        for epoch, first_seq, body in self._rows("samples", query):
            names.update(dict.fromkeys(decode_block(device, epoch, first_seq, body).names))
        return sorted(names)

    def detection_page(self, device: str, camera: str | None = None, since_ms: int | None = None,
                       until_ms: int | None = None, before: tuple[int, str, int, int, int] | None = None,
                       limit: int = 100) -> list[tuple[tuple[int, str, int, int, int], DetectionRecord]]:
        d = t.detections
        key = (d.c.time_ms, d.c.camera, d.c.epoch, d.c.seq, d.c.idx)
        where = [d.c.device == device, *_between(d.c.time_ms, since_ms, until_ms)]
        if camera is not None:
            where.append(d.c.camera == camera)
        if before is not None:
            where.append(sa.tuple_(*key) < sa.tuple_(*(sa.literal(v) for v in before)))
        query = sa.select(d).where(*where).order_by(*(c.desc() for c in key)).limit(limit)
        return [((r.time_ms, r.camera, r.epoch, r.seq, r.idx),
                 DetectionRecord(r.device, r.camera, r.epoch, r.seq, r.time_ms, r.label, r.confidence,
                                 (r.x1, r.y1, r.x2, r.y2), r.track_id))
                for r in self._rows("detections", query)]

    @staticmethod
    def _event(r: Any) -> StoredEvent:
        return StoredEvent(r.id, r.device, r.camera, r.type, r.track_id, r.label, r.time_ms, r.received_ms,
                           dict(r.payload))

    def event_page(self, device: str | None = None, camera: str | None = None, since_ms: int | None = None,
                   until_ms: int | None = None, before_id: int | None = None,
                   limit: int = 100) -> list[StoredEvent]:
        e = t.events
        where = _between(e.c.time_ms, since_ms, until_ms)
        if device is not None:
            where.append(e.c.device == device)
        if camera is not None:
            where.append(e.c.camera == camera)
        if before_id is not None:
            where.append(e.c.id < before_id)
        query = sa.select(e).where(*where).order_by(e.c.id.desc()).limit(limit)
        return [self._event(r) for r in self._rows("events", query)]

    def track_end_event(self, device: str, camera: str, track_id: int,
                        time_ms: int | None = None) -> StoredEvent | None:
        e = t.events
        where = [e.c.device == device, e.c.camera == camera, e.c.type == "end", e.c.track_id == track_id]
        if time_ms is not None:
            where.append(e.c.time_ms == time_ms)
        query = sa.select(e).where(*where).order_by(e.c.time_ms.desc(), e.c.id.desc()).limit(1)
        rows = self._rows("events", query)
        return self._event(rows[0]) if rows else None

    _ANOMALY_COLUMNS = ("device", "metric", "time_ms", "score", "value", "threshold", "low", "high",
                        "explanation", "severity", "kind")

    def _stored_anomaly(self, r: Any) -> StoredAnomaly:
        record = AnomalyRecord(*(r._mapping[c] for c in self._ANOMALY_COLUMNS))
        return StoredAnomaly(r.id, record, r.acknowledged_ms, r.acknowledged_by)

    def anomaly_page(self, device: str | None = None, metric: str | None = None, since_ms: int | None = None,
                     until_ms: int | None = None, acknowledged: bool | None = None,
                     before_id: int | None = None, limit: int = 100) -> list[StoredAnomaly]:
        a = t.anomalies
        where = _between(a.c.time_ms, since_ms, until_ms)
        if device is not None:
            where.append(a.c.device == device)
        if metric is not None:
            where.append(a.c.metric == metric)
        if acknowledged is not None:
            where.append(a.c.acknowledged_ms.is_not(None) if acknowledged else a.c.acknowledged_ms.is_(None))
        if before_id is not None:
            where.append(a.c.id < before_id)
        query = sa.select(a).where(*where).order_by(a.c.id.desc()).limit(limit)
        return [self._stored_anomaly(r) for r in self._rows("anomalies", query)]

    def anomaly(self, anomaly_id: int) -> StoredAnomaly | None:
        a = t.anomalies
        rows = self._rows("anomalies", sa.select(a).where(a.c.id == anomaly_id))
        return self._stored_anomaly(rows[0]) if rows else None

    def acknowledge_anomaly(self, anomaly_id: int, by: str, now_ms: int) -> StoredAnomaly | None:
        a = t.anomalies
        with self._guard("acknowledge an anomaly"), self.engine.begin() as conn:
            conn.execute(sa.update(a).where(a.c.id == anomaly_id, a.c.acknowledged_ms.is_(None))
                         .values(acknowledged_ms=now_ms, acknowledged_by=by[:128]))
            row = conn.execute(sa.select(a).where(a.c.id == anomaly_id)).first()
        return self._stored_anomaly(row) if row is not None else None

    def record_placement_decision(self, decision: Mapping[str, Any]) -> None:
        def text(key: str, size: int) -> str | None:
            value = decision.get(key)
            return None if value is None else str(value)[:size]

        token = decision.get("token")
        row = {"time_ms": int(decision["time_ms"]), "placer": str(decision.get("placer", ""))[:128],
               "token": token if isinstance(token, int) else None, "kind": str(decision.get("kind", ""))[:32],
               "workload": text("workload", 128), "source": text("source", 128),
               "target": text("target", 128),
               "reason": text("reason", 32), "outcome": text("outcome", 4000),
               "detail": str(decision.get("detail", ""))}
        with self._guard("record a placement decision"), self.engine.begin() as conn:
            conn.execute(sa.insert(t.placement_decisions).values(**row))

    def placement_decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        d = t.placement_decisions
        rows = self._rows("placement decisions", sa.select(d).order_by(d.c.id.desc()).limit(limit))
        return [{k: v for k, v in r._mapping.items() if k != "id" and v is not None} for r in rows]

    def record_audit(self, record: AuditRecord) -> bool:
        a = t.audit_events
        row = {"event_id": record.id, "time_ms": record.time_ms, "kind": str(record.kind),
               "subject": record.subject, "reason": record.reason, "source": record.source,
               "detail": record.detail}
        with self._guard("record an audit event"), self.engine.begin() as conn:
            if conn.execute(sa.select(a.c.id).where(a.c.event_id == record.id)).first() is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(a).values(**row))
            except IntegrityError:  # the same record from another writer, just now
                return False
        return True

    def audit_events(self, limit: int = 100, kind: str | None = None,
                     subject: str | None = None) -> list[AuditRecord]:
        a = t.audit_events
        query = sa.select(a).order_by(a.c.time_ms.desc(), a.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(a.c.kind == kind)
        if subject is not None:
            query = query.where(a.c.subject == subject)
        return [AuditRecord(id=r.event_id, time_ms=r.time_ms, kind=r.kind, subject=r.subject, reason=r.reason,
                            source=r.source, detail=r.detail) for r in self._rows("audit events", query)]

    def check_writable(self) -> None:
        m = t.store_meta
        now = str(time.time_ns() // 1_000_000)
        with self._guard("write the health mark"), self.engine.begin() as conn:
            if conn.execute(sa.update(m).where(m.c.key == "health_ms").values(value=now)).rowcount == 0:
                conn.execute(sa.insert(m).values(key="health_ms", value=now))

    def load_sequence_state(self) -> dict[str, DeviceSequence]:
        s = t.sequence_state
        query = sa.select(s.c.stream, s.c.epoch, s.c.ranges, s.c.received, s.c.duplicates, s.c.epochs_seen)
        return {stream: DeviceSequence(epoch, [[int(lo), int(hi)] for lo, hi in ranges], received,
                                       duplicates, epochs_seen)
                for stream, epoch, ranges, received, duplicates, epochs_seen
                in self._rows("sequence state", query)}
