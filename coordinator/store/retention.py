"""Retention and downsampling: what :meth:`SqlStore.apply_retention` does, as SQL.

Downsampling summarises every complete ``downsample_interval_s`` bucket older
than ``downsample_after_days`` into ``metric_rollups`` (count, avg, min, max)
once: a watermark in ``store_meta`` remembers how far it got, so each run only
reads the new stretch. Raw samples stay until ``raw_days``, so recent history
keeps full resolution and older history survives as rollups until
``rollup_days``. Everything is a function of the stored rows and ``now_ms``:
the same call on the same data gives the same result.

Samples live in compressed blocks (:mod:`coordinator.store.blocks`), so both
steps read blocks in Python: downsampling decodes the blocks that hold samples
of the new stretch, and deletion drops whole blocks that are past
``raw_days`` and rewrites the few that straddle the cut-off without their
old samples. A block spans at most ``MAX_TIME_SPAN_MS``, which bounds how far
back either step looks.

Known limit: a sample that arrives after its bucket was summarised (a device
that was offline for longer than ``downsample_after_days`` and then replays its
outbox) is kept raw but not added to the rollup.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from coordinator.store import tables as t
from coordinator.store.blocks import MAX_TIME_SPAN_MS, Block, decode_block
from coordinator.store.config import DAY_MS, RetentionConfig
from coordinator.store.records import RetentionResult

__all__ = ["ROLLUP_WATERMARK", "apply_retention"]

logger = logging.getLogger(__name__)

ROLLUP_WATERMARK = "rollup_until_ms"


def _watermark(conn: Connection) -> int | None:
    meta = t.store_meta
    value = conn.execute(sa.select(meta.c.value).where(meta.c.key == ROLLUP_WATERMARK)).scalar()
    return None if value is None else int(value)


def _set_watermark(conn: Connection, ms: int) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(t.store_meta).values(key=ROLLUP_WATERMARK, value=str(ms))
    conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_={"value": str(ms)}))


def _downsample(conn: Connection, config: RetentionConfig, now_ms: int) -> tuple[int, int | None]:
    interval_ms = config.downsample_interval_s * 1000
    cutoff = (now_ms - int(config.downsample_after_days * DAY_MS)) // interval_ms * interval_ms
    start = _watermark(conn)
    if start is not None:
        start = start // interval_ms * interval_ms
        if start >= cutoff:
            return 0, start
    b = t.metric_blocks
    where = [b.c.first_ms < cutoff]
    if start is not None:
        where.append(b.c.first_ms >= start - MAX_TIME_SPAN_MS)
    # (count, sum, min, max) per bucket: the stretch can be long (a first run over old history).
    buckets: dict[tuple[str, str, int], list[float]] = {}
    query = sa.select(b.c.device, b.c.epoch, b.c.first_seq, b.c.body).where(*where)
    for row in conn.execute(query.execution_options(yield_per=500)):
        block = decode_block(row.device, row.epoch, row.first_seq, row.body)
        for _, time_ms, name, value in block.samples():
            if time_ms < cutoff and (start is None or time_ms >= start):
                key = (block.device, name, time_ms - time_ms % interval_ms)
                acc = buckets.get(key)
                if acc is None:
                    buckets[key] = [1, value, value, value]
                else:
                    acc[0] += 1
                    acc[1] += value
                    acc[2] = min(acc[2], value)
                    acc[3] = max(acc[3], value)
    rows = [{"device": device, "name": name, "interval_s": config.downsample_interval_s, "bucket_ms": bucket,
             "count": int(count), "avg": total / count, "min": low, "max": high}
            for (device, name, bucket), (count, total, low, high) in sorted(buckets.items())]
    written = 0
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for first in range(0, len(rows), 1000):
        statement = insert(t.metric_rollups).values(rows[first:first + 1000])
        ex = statement.excluded
        # Only reached again for a bucket when the watermark was lost; recomputing replaces it.
        statement = statement.on_conflict_do_update(
            index_elements=["device", "name", "interval_s", "bucket_ms"],
            set_={name: ex[name] for name in ("count", "avg", "min", "max")})
        conn.execute(statement)
        written += len(rows[first:first + 1000])
    _set_watermark(conn, cutoff)
    return written, cutoff


def _delete_before(conn: Connection, column: sa.Column[int], days: float, now_ms: int) -> int:
    if days <= 0:
        return 0
    table = column.table
    assert isinstance(table, sa.Table)
    return int(conn.execute(sa.delete(table).where(column < now_ms - int(days * DAY_MS))).rowcount)


def _delete_samples_before(conn: Connection, days: float, now_ms: int) -> int:
    """Drop blocks whose every sample is older than ``days``, and trim those that straddle the cut-off."""
    if days <= 0:
        return 0
    cutoff = now_ms - int(days * DAY_MS)
    b = t.metric_blocks
    deleted = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(b.c["count"]), 0))
                               .where(b.c.last_ms < cutoff)).scalar_one())
    conn.execute(sa.delete(b).where(b.c.last_ms < cutoff))
    straddling = conn.execute(sa.select(b.c.device, b.c.epoch, b.c.first_seq, b.c.body)
                              .where(b.c.first_ms < cutoff)).all()
    for row in straddling:
        block = decode_block(row.device, row.epoch, row.first_seq, row.body)
        kept: Block | None = block.without([time_ms >= cutoff for time_ms in block.times])
        assert kept is not None  # its newest sample is not past the cut-off
        deleted += block.count - kept.count
        conn.execute(sa.delete(b).where(b.c.device == row.device, b.c.epoch == row.epoch,
                                        b.c.first_seq == row.first_seq))
        conn.execute(sa.insert(b).values(dict(zip(b.c.keys(), kept.row(), strict=True))))
    return deleted


def _keep_newest_dead_letters(conn: Connection, max_rows: int) -> int:
    """Delete all but the newest ``max_rows`` dead letters (0: no count bound): a flood of refusals
    must not fill the disk within the days they are kept."""
    if max_rows <= 0:
        return 0
    d = t.dead_letters
    # By id (insertion order): the newest kept exactly, also when many share a millisecond.
    newest_gone = conn.execute(sa.select(d.c.id).order_by(d.c.id.desc()).offset(max_rows).limit(1)).scalar()
    if newest_gone is None:
        return 0
    deleted = conn.execute(sa.delete(d).where(d.c.id <= newest_gone)).rowcount or 0
    return int(deleted)


def apply_retention(conn: Connection, config: RetentionConfig, now_ms: int) -> RetentionResult:
    """Downsample, then delete what is past its retention (inside the caller's transaction)."""
    result = RetentionResult()
    if config.downsampling:
        result.rollups_written, result.rolled_up_until_ms = _downsample(conn, config, now_ms)
    result.samples_deleted = _delete_samples_before(conn, config.raw_days, now_ms)
    result.rollups_deleted = _delete_before(conn, t.metric_rollups.c.bucket_ms, config.rollup_days, now_ms)
    result.detections_deleted = _delete_before(conn, t.detections.c.time_ms, config.detection_days, now_ms)
    result.events_deleted = _delete_before(conn, t.events.c.time_ms, config.detection_days, now_ms)
    result.anomalies_deleted = _delete_before(conn, t.anomalies.c.time_ms, config.anomaly_days, now_ms)
    result.dead_letters_deleted = _delete_before(conn, t.dead_letters.c.received_ms, config.dead_letter_days,
                                                 now_ms)
    result.dead_letters_deleted += _keep_newest_dead_letters(conn, config.dead_letter_max_rows)
    result.audit_events_deleted = _delete_before(conn, t.audit_events.c.time_ms, config.audit_days, now_ms)
    logger.info("retention: %d rollups written, %d samples, %d rollups, %d detections, %d events, "
                "%d anomalies, %d dead letters, %d audit records deleted", result.rollups_written,
                result.samples_deleted, result.rollups_deleted, result.detections_deleted,
                result.events_deleted, result.anomalies_deleted, result.dead_letters_deleted,
                result.audit_events_deleted)
    return result
