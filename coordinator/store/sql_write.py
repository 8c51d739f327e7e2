"""The write path: one :class:`WriteBatch` in one transaction, redeliveries skipped by key.

Metric samples go in as compressed blocks (:mod:`coordinator.store.blocks`),
one row per run; one query per batch finds stored blocks that overlap the
new ones (none, unless something is redelivered), and only the samples not
stored yet are written, so a sample is stored once whatever the batching.

Detections and the blocks are the volume; they go in as one executemany of a
prepared ``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and as one
``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`` on
PostgreSQL (one round trip for the whole batch; measured at about five times
psycopg's executemany with RETURNING). The rows the database reports
inserted are the new ones; the rest were already stored.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from coordinator.store import tables as t
from coordinator.store.blocks import MAX_SEQ_SPAN, Block, blocks_of_rows, blocks_of_runs, decode_block
from coordinator.store.records import DetectionRecord, WriteBatch, WriteResult
from schemas.errors import StoreError
from schemas.sequence import DeviceSequence

__all__ = ["IN_CHUNK", "in_chunks", "merge_sequence_state", "upsert", "write_batch", "write_sequence_state"]

_BLOCK_COLUMNS = ("device", "epoch", "first_seq", "last_seq", "count", "first_ms", "last_ms", "body")
_BLOCK_TYPES = ("text", "bigint", "bigint", "bigint", "integer", "bigint", "bigint", "bytea")
_DETECTION_COLUMNS = ("device", "camera", "epoch", "seq", "idx", "time_ms", "label", "confidence",
                      "x1", "y1", "x2", "y2", "track_id")
_DETECTION_TYPES = ("text", "text", "bigint", "bigint", "integer", "bigint", "text", "float8",
                    "float8", "float8", "float8", "float8", "bigint")


# Parameters per multi-row INSERT on SQLite (within the connection's limit, 32766 by default).
_MAX_VARIABLES = 32766


def _insert(conn: Connection) -> Callable[[sa.Table], Any]:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _bulk_insert_ignore(conn: Connection, table: sa.Table, columns: Sequence[str], types: Sequence[str],
                        rows: list[tuple[Any, ...]], *, weight: str | None = None) -> int:
    """Insert tuples, skipping rows whose key exists; returns how many were inserted, or with
    ``weight`` the sum of that column over the rows inserted (a block's sample count)."""
    if not rows:
        return 0
    names = ", ".join(columns)
    returning = f" RETURNING {weight}" if weight else ""

    def inserted(result: Any) -> int:
        return sum(value for (value,) in result) if weight else int(result.rowcount)

    if conn.dialect.name == "postgresql":
        arrays = ", ".join(f"CAST(:c{i} AS {kind}[])" for i, kind in enumerate(types))
        statement = (f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays}) "
                     f"ON CONFLICT DO NOTHING{returning}")
        params = {f"c{i}": list(column) for i, column in enumerate(zip(*rows, strict=True))}
        options = {"preserve_rowcount": True}
        return inserted(conn.execute(sa.text(statement), params, execution_options=options))
    # Multi-row VALUES in chunks of fixed sizes (so the driver's statement cache keeps them
    # prepared): one bind and one step per chunk instead of per row. Each step releases the GIL,
    # and getting it back from a busy thread costs up to a switch interval (5 ms) each time.
    total = 0
    for start, size in _chunks(conn, len(columns), len(rows)):
        statement = _multi_insert(table.name, names, len(columns), size) + returning
        part = tuple(chain.from_iterable(rows[start:start + size]))
        total += inserted(conn.exec_driver_sql(statement, part))
    return total


def _chunks(conn: Connection, width: int, count: int) -> Iterator[tuple[int, int]]:
    """(start, size) of multi-row statements for ``count`` rows of ``width`` parameters on SQLite.

    Sizes are the largest that fit the variable limit, then halves of it: few
    distinct statements, so the driver's statement cache keeps them prepared.
    """
    chunk = max(_variable_limit(conn) // width, 1)
    start = 0
    while start < count:
        while chunk > count - start:
            chunk //= 2
        yield start, chunk
        start += chunk


def _variable_limit(conn: Connection) -> int:
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return min(driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER), _MAX_VARIABLES)


@functools.lru_cache(maxsize=64)
def _multi_insert(table: str, names: str, width: int, rows: int) -> str:
    row = f"({', '.join('?' * width)})"
    return f"INSERT INTO {table} ({names}) VALUES {', '.join([row] * rows)} ON CONFLICT DO NOTHING"


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> int:
    """Low-volume variant through Core (JSON and binary columns); returns rows inserted."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        # psycopg reports no rowcount for executemany; RETURNING names exactly the rows inserted.
        statement = postgresql.insert(table).on_conflict_do_nothing().returning(table.c.id)
        return len(conn.execute(statement, rows).all())
    return int(conn.execute(sqlite.insert(table).on_conflict_do_nothing(), rows).rowcount)


def _new_blocks(batch: WriteBatch) -> tuple[list[Block], int]:
    """The batch's samples as blocks (each device's consecutive runs joined), and repeats within the batch."""
    blocks, repeats = blocks_of_rows([(s.device, s.epoch, s.seq, s.time_ms, s.name, s.value)
                                      for s in batch.samples]) if batch.samples else ([], 0)
    return blocks + blocks_of_runs(batch.sample_columns), repeats


def _stored_overlapping(conn: Connection, blocks: Sequence[Block]) -> dict[tuple[str, int], list[Block]]:
    """Stored blocks that share a sequence number range with any of ``blocks``, by (device, epoch)."""
    found: dict[tuple[str, int], list[Block]] = {}
    join = ("SELECT DISTINCT b.device, b.epoch, b.first_seq, b.body FROM i JOIN metric_blocks b "
            "ON b.device = i.d AND b.epoch = i.e AND b.first_seq <= i.hi "
            f"AND b.first_seq > i.lo - {MAX_SEQ_SPAN} AND b.last_seq >= i.lo")
    keys = [(b.device, b.epoch, b.first_seq, b.last_seq) for b in blocks]
    if conn.dialect.name == "postgresql":
        columns = list(zip(*keys, strict=True))
        statement = ("WITH i(d, e, lo, hi) AS (SELECT * FROM unnest(CAST(:d AS text[]), "
                     "CAST(:e AS bigint[]), CAST(:lo AS bigint[]), CAST(:hi AS bigint[]))) " + join)
        parts = [conn.execute(sa.text(statement), {"d": list(columns[0]), "e": list(columns[1]),
                                                   "lo": list(columns[2]), "hi": list(columns[3])})]
    else:
        parts = []
        for start, size in _chunks(conn, 4, len(keys)):
            values = ", ".join(["(?, ?, ?, ?)"] * size)
            parts.append(conn.exec_driver_sql(f"WITH i(d, e, lo, hi) AS (VALUES {values}) {join}",
                                              tuple(chain.from_iterable(keys[start:start + size]))))
    for rows in parts:
        for device, epoch, first_seq, body in rows:
            found.setdefault((device, epoch), []).append(decode_block(device, epoch, first_seq, bytes(body)))
    return found


def _unstored(blocks: Sequence[Block], stored: dict[tuple[str, int], list[Block]]) -> list[Block]:
    """``blocks`` less every sample already stored or earlier in ``blocks`` (by device, epoch, seq)."""
    accepted: list[Block] = []
    spans: dict[tuple[str, int], list[tuple[int, int, Block]]] = {}
    for block in blocks:
        key = (block.device, block.epoch)
        lo, hi = block.first_seq, block.last_seq
        earlier = spans.setdefault(key, [])
        clashes = [b for b in stored.get(key, ()) if b.first_seq <= hi and b.last_seq >= lo]
        clashes += [b for first, last, b in earlier if first <= hi and last >= lo]
        if clashes:
            taken = set(chain.from_iterable(b.seq_list() for b in clashes))
            kept = block.without([seq not in taken for seq in block.seq_list()])
            if kept is None:
                continue
            block = kept
        earlier.append((block.first_seq, block.last_seq, block))
        accepted.append(block)
    return accepted


def _insert_blocks(conn: Connection, blocks: Sequence[Block]) -> int:
    """Insert blocks (skipping any whose key a concurrent writer just took); samples inserted."""
    return _bulk_insert_ignore(conn, t.metric_blocks, _BLOCK_COLUMNS, _BLOCK_TYPES,
                               [block.row() for block in blocks], weight="count")


def _detection_rows(detections: Sequence[DetectionRecord]) -> list[tuple[Any, ...]]:
    rows = []
    index: dict[tuple[str, str, int, int], int] = {}
    for d in detections:
        key = (d.device, d.camera, d.epoch, d.seq)
        idx = index.get(key, 0)
        index[key] = idx + 1
        x1, y1, x2, y2 = d.box
        rows.append((d.device, d.camera, d.epoch, d.seq, idx, d.time_ms, d.label, float(d.confidence),
                     float(x1), float(y1), float(x2), float(y2), d.track_id))
    return rows


def _newer(table: sa.Table, excluded: Any, stamp: str, column: str) -> Any:
    """``excluded.column`` when the incoming ``stamp`` is at least the stored one, else the stored value."""
    mine, theirs = table.c[stamp], excluded[stamp]
    take = sa.and_(theirs.is_not(None), sa.or_(mine.is_(None), theirs >= mine))
    return sa.case((take, excluded[column]), else_=table.c[column])


def _device_rows(batch: WriteBatch) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}

    def row(device: str, ms: int) -> dict[str, Any]:
        seen = batch.seen_ms if batch.seen_ms is not None else ms
        entry = rows.get(device)
        if entry is None:
            entry = rows[device] = {"id": device, "first_seen_ms": seen, "last_seen_ms": seen,
                                    "last_status": None, "last_status_ms": None, "birth_epoch": None,
                                    "birth_ms": None, "agent_version": None}
        else:
            entry["first_seen_ms"] = min(entry["first_seen_ms"], seen)
            entry["last_seen_ms"] = max(entry["last_seen_ms"], seen)
        return entry

    stamped: Iterable[tuple[str, int]] = (
        *((s.device, s.time_ms) for s in batch.samples),
        # first and last seen are a minimum and a maximum: a run's extremes stand for all its samples
        *((c.device, ms) for c in batch.sample_columns if c.times for ms in (min(c.times), max(c.times))),
        *((d.device, d.time_ms) for d in batch.detections),
        *((e.device, e.received_ms) for e in batch.events),
    )
    for device, ms in stamped:
        row(device, ms)
    for birth in batch.births:
        entry = row(birth.device, birth.time_ms)
        if entry["birth_ms"] is None or birth.time_ms >= entry["birth_ms"]:
            entry.update(birth_epoch=birth.epoch, birth_ms=birth.time_ms, agent_version=birth.agent_version)
    for device, status, ms in batch.statuses:
        entry = row(device, ms)
        if entry["last_status_ms"] is None or ms >= entry["last_status_ms"]:
            entry.update(last_status=status, last_status_ms=ms)
    return list(rows.values())


def upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], key: str,
            updates: Callable[[Any], dict[str, Any]]) -> None:
    """``INSERT .. ON CONFLICT (key) DO UPDATE SET updates(excluded)`` for ``rows``.

    On SQLite as multi-row VALUES, a statement per chunk rather than per row
    (see :func:`_bulk_insert_ignore` for why the number of steps matters).
    """
    if conn.dialect.name != "sqlite":
        statement = _insert(conn)(table)
        conn.execute(statement.on_conflict_do_update(index_elements=[key], set_=updates(statement.excluded)),
                     rows)
        return
    chunk = max(_variable_limit(conn) // len(table.columns), 1)
    for start in range(0, len(rows), chunk):
        statement = sqlite.insert(table).values(rows[start:start + chunk])
        conn.execute(statement.on_conflict_do_update(index_elements=[key], set_=updates(statement.excluded)))


def _upsert_devices(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = t.devices
    upsert(conn, table, rows, "id", lambda ex: {
        "first_seen_ms": sa.case((ex.first_seen_ms < table.c.first_seen_ms, ex.first_seen_ms),
                                 else_=table.c.first_seen_ms),
        "last_seen_ms": sa.case((ex.last_seen_ms > table.c.last_seen_ms, ex.last_seen_ms),
                                else_=table.c.last_seen_ms),
        "last_status": _newer(table, ex, "last_status_ms", "last_status"),
        "last_status_ms": _newer(table, ex, "last_status_ms", "last_status_ms"),
        "birth_epoch": _newer(table, ex, "birth_ms", "birth_epoch"),
        "agent_version": _newer(table, ex, "birth_ms", "agent_version"),
        "birth_ms": _newer(table, ex, "birth_ms", "birth_ms"),
    })


_SEQUENCE_COLUMNS = ("epoch", "ranges", "received", "duplicates", "epochs_seen")


def _sequence_rows(states: Mapping[str, DeviceSequence]) -> list[dict[str, Any]]:
    return [{"stream": stream, "epoch": s.epoch, "ranges": [list(r) for r in s.ranges],
             "received": s.received, "duplicates": s.duplicates, "epochs_seen": s.epochs_seen}
            for stream, s in states.items()]


def write_sequence_state(conn: Connection, states: Mapping[str, DeviceSequence]) -> None:
    """Store these accounts as they are, replacing what is stored (``Store.save_sequence_state``)."""
    if not states:
        return
    upsert(conn, t.sequence_state, _sequence_rows(states), "stream",
           lambda ex: {name: ex[name] for name in _SEQUENCE_COLUMNS})


#: Values bound in one ``IN (...)`` at most: within every backend's bound-parameter limit.
IN_CHUNK = 500


def in_chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    """``values`` in slices of at most :data:`IN_CHUNK`, one ``IN (...)`` query each."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


def _stored_sequence_state(conn: Connection, streams: Sequence[str]) -> dict[str, DeviceSequence]:
    """The stored accounts of ``streams``, their rows locked until commit (PostgreSQL; SQLite: one writer)."""
    s = t.sequence_state
    found: dict[str, DeviceSequence] = {}
    for chunk in in_chunks(streams):
        query = (sa.select(s.c.stream, *(s.c[name] for name in _SEQUENCE_COLUMNS))
                 .where(s.c.stream.in_(chunk)).order_by(s.c.stream).with_for_update())
        for stream, epoch, ranges, received, duplicates, epochs_seen in conn.execute(query):
            found[stream] = DeviceSequence(epoch, [[int(lo), int(hi)] for lo, hi in ranges], received,
                                           duplicates, epochs_seen)
    return found


def merge_sequence_state(conn: Connection, states: Mapping[str, DeviceSequence]) -> dict[str, DeviceSequence]:
    """Merge these accounts into the stored ones (:meth:`DeviceSequence.merged`); returns what is stored now.

    Two coordinators may write one stream during a move, each from what it
    read when it took the device: a plain overwrite let the new owner's
    account drop what the old owner committed after that read (samples then
    reported missing that are stored). Merged under the row's lock, the
    stored account is every writer's committed samples. A row another writer
    inserts meanwhile (both found none) is merged with in a second round.
    """
    if not states:
        return {}
    pending = dict(states)
    merged: dict[str, DeviceSequence] = {}
    for _ in range(3):  # a row appears between the read and the insert at most once
        stored = _stored_sequence_state(conn, sorted(pending))
        now = {stream: stored[stream].merged(state) if stream in stored else state
               for stream, state in pending.items()}
        update = {stream: state for stream, state in now.items() if stream in stored}
        write_sequence_state(conn, update)
        merged.update(update)
        fresh = {stream: state for stream, state in now.items() if stream not in stored}
        if not fresh:
            return merged
        table = t.sequence_state
        statement = _insert(conn)(table).on_conflict_do_nothing().returning(table.c.stream)
        inserted = {stream for (stream,) in conn.execute(statement, _sequence_rows(fresh))}
        merged.update({stream: fresh[stream] for stream in inserted})
        pending = {stream: pending[stream] for stream in fresh if stream not in inserted}
        if not pending:
            return merged
    raise StoreError(f"sequence state of {len(pending)} streams kept changing while being merged",
                     transient=True)


def write_batch(conn: Connection, batch: WriteBatch) -> WriteResult:
    """Write ``batch`` on ``conn`` (inside the caller's transaction)."""
    result = WriteResult()
    # Device rows first: upserting them locks them (PostgreSQL: the rows; SQLite: the database) until
    # commit, so a second writer storing samples of the same device waits, and its overlap check below
    # then sees what this transaction stored. Sorted, so that two writers lock in the same order.
    devices = sorted(_device_rows(batch), key=lambda row: row["id"])
    _upsert_devices(conn, devices)
    result.devices = len(devices)
    if batch.samples or batch.sample_columns:
        blocks, repeats = _new_blocks(batch)
        new = _insert_blocks(conn, _unstored(blocks, _stored_overlapping(conn, blocks)))
        result.samples_new = new
        result.samples_duplicate = sum(block.count for block in blocks) + repeats - new
    if batch.detections:
        new = _bulk_insert_ignore(conn, t.detections, _DETECTION_COLUMNS, _DETECTION_TYPES,
                                  _detection_rows(batch.detections))
        result.detections_new, result.detections_duplicate = new, len(batch.detections) - new
    if batch.events:
        rows = [{"device": e.device, "camera": e.camera, "type": str(e.event.get("type", "")),
                 "track_id": e.event.get("track_id"), "label": e.event.get("label"),
                 "time_ms": int(e.event.get("time_ms", e.received_ms)), "received_ms": e.received_ms,
                 "payload": dict(e.event)} for e in batch.events]
        result.events_new = _insert_ignore(conn, t.events, rows)
        result.events_duplicate = len(rows) - result.events_new
    if batch.births:
        rows = [{"device": b.device, "epoch": b.epoch, "time_ms": b.time_ms, "payload": b.to_json()}
                for b in batch.births]
        result.births_new = _insert_ignore(conn, t.births, rows)
        result.births_duplicate = len(rows) - result.births_new
    if batch.anomalies:
        conn.execute(t.anomalies.insert(), [
            {"device": a.device, "metric": a.metric, "time_ms": a.time_ms, "score": a.score, "value": a.value,
             "threshold": a.threshold, "low": a.expected_low, "high": a.expected_high,
             "explanation": a.explanation, "severity": str(a.severity), "kind": str(a.kind),
             "calibrated": a.calibrated}
            for a in batch.anomalies])
        result.anomalies = len(batch.anomalies)
    if batch.dead_letters:
        conn.execute(t.dead_letters.insert(), [
            {"received_ms": d.received_ms, "topic": d.topic, "reason": d.reason, "error": d.error,
             "payload": bytes(d.payload)} for d in batch.dead_letters])
        result.dead_letters = len(batch.dead_letters)
    result.sequence_state = merge_sequence_state(conn, batch.sequence_state)
    return result
