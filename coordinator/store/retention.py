"""Retention and downsampling: what :meth:`SqlStore.apply_retention` does, as SQL.

Downsampling summarises every complete ``downsample_interval_s`` bucket older
than ``downsample_after_days`` into ``metric_rollups`` (count, avg, min, max)
once: a watermark in ``store_meta`` remembers how far it got, so each run only
reads the new stretch. Raw samples stay until ``raw_days``, so recent history
keeps full resolution and older history survives as rollups until
``rollup_days``. Everything is a function of the stored rows and ``now_ms``:
the same call on the same data gives the same result.

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
    s = t.metric_samples
    bucket = (s.c.time_ms - s.c.time_ms % interval_ms).label("bucket_ms")
    where = [s.c.time_ms < cutoff] + ([s.c.time_ms >= start] if start is not None else [])
    select = (sa.select(s.c.device, s.c.name, sa.literal(config.downsample_interval_s, sa.Integer),
                        bucket, sa.func.count(), sa.func.avg(s.c.value), sa.func.min(s.c.value),
                        sa.func.max(s.c.value))
              .where(*where).group_by(s.c.device, s.c.name, bucket))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(t.metric_rollups).from_select(
        ["device", "name", "interval_s", "bucket_ms", "count", "avg", "min", "max"], select)
    ex = statement.excluded
    # Only reached again for a bucket when the watermark was lost; recomputing replaces it.
    statement = statement.on_conflict_do_update(
        index_elements=["device", "name", "interval_s", "bucket_ms"],
        set_={name: ex[name] for name in ("count", "avg", "min", "max")})
    written = int(conn.execute(statement, execution_options={"preserve_rowcount": True}).rowcount)
    _set_watermark(conn, cutoff)
    return written, cutoff


def _delete_before(conn: Connection, column: sa.Column[int], days: float, now_ms: int) -> int:
    if days <= 0:
        return 0
    table = column.table
    assert isinstance(table, sa.Table)
    return int(conn.execute(sa.delete(table).where(column < now_ms - int(days * DAY_MS))).rowcount)


def apply_retention(conn: Connection, config: RetentionConfig, now_ms: int) -> RetentionResult:
    """Downsample, then delete what is past its retention (inside the caller's transaction)."""
    result = RetentionResult()
    if config.downsampling:
        result.rollups_written, result.rolled_up_until_ms = _downsample(conn, config, now_ms)
    result.samples_deleted = _delete_before(conn, t.metric_samples.c.time_ms, config.raw_days, now_ms)
    result.rollups_deleted = _delete_before(conn, t.metric_rollups.c.bucket_ms, config.rollup_days, now_ms)
    result.detections_deleted = _delete_before(conn, t.detections.c.time_ms, config.detection_days, now_ms)
    result.events_deleted = _delete_before(conn, t.events.c.time_ms, config.detection_days, now_ms)
    result.anomalies_deleted = _delete_before(conn, t.anomalies.c.time_ms, config.anomaly_days, now_ms)
    result.dead_letters_deleted = _delete_before(conn, t.dead_letters.c.received_ms, config.dead_letter_days,
                                                 now_ms)
    logger.info("retention: %d rollups written, %d samples, %d rollups, %d detections, %d events, "
                "%d anomalies, %d dead letters deleted", result.rollups_written, result.samples_deleted,
                result.rollups_deleted, result.detections_deleted, result.events_deleted,
                result.anomalies_deleted, result.dead_letters_deleted)
    return result
