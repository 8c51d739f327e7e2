"""The store's tables (SQLAlchemy Core), the shape the Alembic revisions build.

Core rather than the ORM: the hot path inserts thousands of rows per
transaction from plain tuples, and Core's executemany (SQLite) or one
``unnest`` statement (PostgreSQL) does that without building an object per
row. Times are integer milliseconds since the epoch, as on the wire.

Keep this file and ``migrations/versions`` in step: a change here needs a new
revision (``tests/test_store_migrations.py`` compares the two).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "anomalies", "audit_events", "births", "dead_letters", "detections", "detector_states", "devices",
    "events", "metadata", "metric_blocks", "metric_rollups", "placement_decisions", "sequence_state",
    "store_meta",
]

metadata = sa.MetaData()

# SQLite only aliases the rowid for a column declared exactly INTEGER.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ms = sa.BigInteger

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("first_seen_ms", Ms, nullable=False),
    sa.Column("last_seen_ms", Ms, nullable=False),
    sa.Column("last_status", sa.String(32)),
    sa.Column("last_status_ms", Ms),
    sa.Column("birth_epoch", Ms),
    sa.Column("birth_ms", Ms),
    sa.Column("agent_version", sa.String(64)),
)

births = sa.Table(
    "births", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("device", sa.String(128), nullable=False),
    sa.Column("epoch", Ms, nullable=False),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.UniqueConstraint("device", "epoch", "time_ms", name="uq_births_device_epoch_time"),
)

# Metric samples in compressed blocks (coordinator/store/blocks.py), one row per run of a device's samples.
# (device, epoch, seq) is the identity of a sample; a block holds seqs first_seq..last_seq (all of them, or
# those its body lists) and spans at most blocks.MAX_SEQ_SPAN seqs and MAX_TIME_SPAN_MS, so the write path's
# overlap check and time-range reads look back a bounded distance from first_seq and first_ms.
metric_blocks = sa.Table(
    "metric_blocks", metadata,
    sa.Column("device", sa.String(128), primary_key=True),
    sa.Column("epoch", Ms, primary_key=True),
    sa.Column("first_seq", Ms, primary_key=True),
    sa.Column("last_seq", Ms, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_ms", Ms, nullable=False),
    sa.Column("last_ms", Ms, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("ix_metric_blocks_device_first_ms", "device", "first_ms"),
    sa.Index("ix_metric_blocks_first_ms", "first_ms"),
    sqlite_with_rowid=False,
)

metric_rollups = sa.Table(
    "metric_rollups", metadata,
    sa.Column("device", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("interval_s", sa.Integer, primary_key=True),
    sa.Column("bucket_ms", Ms, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("avg", sa.Float(53), nullable=False),
    sa.Column("min", sa.Float(53), nullable=False),
    sa.Column("max", sa.Float(53), nullable=False),
    sa.Index("ix_metric_rollups_bucket", "bucket_ms"),
    sqlite_with_rowid=False,
)

# One row per detected object; ``idx`` is its position in the frame, so a frame is stored once.
detections = sa.Table(
    "detections", metadata,
    sa.Column("device", sa.String(128), primary_key=True),
    sa.Column("camera", sa.String(128), primary_key=True),
    sa.Column("epoch", Ms, primary_key=True),
    sa.Column("seq", Ms, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("x1", sa.Float, nullable=False),
    sa.Column("y1", sa.Float, nullable=False),
    sa.Column("x2", sa.Float, nullable=False),
    sa.Column("y2", sa.Float, nullable=False),
    sa.Column("track_id", Ms),
    sa.Index("ix_detections_device_camera_time", "device", "camera", "time_ms"),
    sa.Index("ix_detections_time", "time_ms"),
    sqlite_with_rowid=False,
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("device", sa.String(128), nullable=False),
    sa.Column("camera", sa.String(128), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("track_id", Ms),
    sa.Column("label", sa.String(128)),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("received_ms", Ms, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    # Events carry no sequence number; this key drops a redelivered event.
    sa.UniqueConstraint("device", "camera", "type", "track_id", "time_ms", name="uq_events_identity"),
    sa.Index("ix_events_device_camera_time", "device", "camera", "time_ms"),
)

anomalies = sa.Table(
    "anomalies", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("device", sa.String(128), nullable=False),
    sa.Column("metric", sa.String(128), nullable=False),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("score", sa.Float(53), nullable=False),
    sa.Column("value", sa.Float(53)),
    sa.Column("threshold", sa.Float(53)),
    sa.Column("low", sa.Float(53)),
    sa.Column("high", sa.Float(53)),
    sa.Column("explanation", sa.Text, nullable=False, server_default=""),
    sa.Column("severity", sa.String(32), nullable=False, server_default="warning"),
    sa.Column("kind", sa.String(32), nullable=False, server_default="deviation"),
    sa.Column("calibrated", sa.Float(53)),  # in [0, 1], comparable across streams (revision 0003)
    # Set once by an operator (the HTTP API's acknowledge); NULL while the anomaly is unacknowledged.
    sa.Column("acknowledged_ms", Ms),
    sa.Column("acknowledged_by", sa.String(128)),
    sa.Index("ix_anomalies_device_metric_time", "device", "metric", "time_ms"),
    sa.Index("ix_anomalies_time", "time_ms"),
)

dead_letters = sa.Table(
    "dead_letters", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("received_ms", Ms, nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Index("ix_dead_letters_received", "received_ms"),
)

# Security events (schemas/audit.py), one row per record id (revision 0007).
audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("event_id", name="uq_audit_events_event_id"),
    sa.Index("ix_audit_events_time", "time_ms"),
)

# The load balancer's decisions (coordinator/placement/service.py), newest last (revision 0005).
placement_decisions = sa.Table(
    "placement_decisions", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("placer", sa.String(128), nullable=False),
    sa.Column("token", Ms),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("workload", sa.String(128)),
    sa.Column("source", sa.String(128)),
    sa.Column("target", sa.String(128)),
    sa.Column("reason", sa.String(32)),
    sa.Column("outcome", sa.Text),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_placement_decisions_time", "time_ms"),
)

# Per-stream loss/duplicate accounting (schemas.sequence.DeviceSequence), so it survives a restart.
# A device's anomaly detectors as one checkpoint blob, kept by the coordinator that takes the
# device ([cluster]) so the next one continues them instead of warming up again.
detector_states = sa.Table(
    "detector_states", metadata,
    sa.Column("device", sa.String(128), primary_key=True),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("owner", sa.String(128), nullable=False),
)

sequence_state = sa.Table(
    "sequence_state", metadata,
    sa.Column("stream", sa.String(300), primary_key=True),
    sa.Column("epoch", Ms, nullable=False),
    sa.Column("ranges", sa.JSON, nullable=False),
    sa.Column("received", Ms, nullable=False),
    sa.Column("duplicates", Ms, nullable=False),
    sa.Column("epochs_seen", Ms, nullable=False),
)

# Small key/value facts the store keeps about itself (the rollup watermark).
store_meta = sa.Table(
    "store_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
