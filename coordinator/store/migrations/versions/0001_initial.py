"""Initial schema: devices, births, metric samples and rollups, detections, events, anomalies,
dead letters, sequence state and store metadata.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The tables below are written out as they stood at this revision, on purpose: a migration is a
# snapshot and must not follow later edits to coordinator/store/tables.py, so it repeats them.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MS = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("first_seen_ms", MS, nullable=False),
        sa.Column("last_seen_ms", MS, nullable=False),
        sa.Column("last_status", sa.String(32)),
        sa.Column("last_status_ms", MS),
        sa.Column("birth_epoch", MS),
        sa.Column("birth_ms", MS),
        sa.Column("agent_version", sa.String(64)),
    )
    op.create_table(
        "births",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("epoch", MS, nullable=False),
        sa.Column("time_ms", MS, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.UniqueConstraint("device", "epoch", "time_ms", name="uq_births_device_epoch_time"),
    )
    op.create_table(
        "metric_samples",
        sa.Column("device", sa.String(128), primary_key=True),
        sa.Column("epoch", MS, primary_key=True),
        sa.Column("seq", MS, primary_key=True),
        sa.Column("time_ms", MS, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(53), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_metric_samples_device_name_time", "metric_samples", ["device", "name", "time_ms"])
    op.create_index("ix_metric_samples_time", "metric_samples", ["time_ms"])
    op.create_table(
        "metric_rollups",
        sa.Column("device", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("interval_s", sa.Integer, primary_key=True),
        sa.Column("bucket_ms", MS, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("avg", sa.Float(53), nullable=False),
        sa.Column("min", sa.Float(53), nullable=False),
        sa.Column("max", sa.Float(53), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_metric_rollups_bucket", "metric_rollups", ["bucket_ms"])
    op.create_table(
        "detections",
        sa.Column("device", sa.String(128), primary_key=True),
        sa.Column("camera", sa.String(128), primary_key=True),
        sa.Column("epoch", MS, primary_key=True),
        sa.Column("seq", MS, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("time_ms", MS, nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("x1", sa.Float, nullable=False),
        sa.Column("y1", sa.Float, nullable=False),
        sa.Column("x2", sa.Float, nullable=False),
        sa.Column("y2", sa.Float, nullable=False),
        sa.Column("track_id", MS),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_detections_device_camera_time", "detections", ["device", "camera", "time_ms"])
    op.create_index("ix_detections_time", "detections", ["time_ms"])
    op.create_table(
        "events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("camera", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("track_id", MS),
        sa.Column("label", sa.String(128)),
        sa.Column("time_ms", MS, nullable=False),
        sa.Column("received_ms", MS, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.UniqueConstraint("device", "camera", "type", "track_id", "time_ms", name="uq_events_identity"),
    )
    op.create_index("ix_events_device_camera_time", "events", ["device", "camera", "time_ms"])
    op.create_table(
        "anomalies",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("time_ms", MS, nullable=False),
        sa.Column("score", sa.Float(53), nullable=False),
        sa.Column("value", sa.Float(53)),
        sa.Column("threshold", sa.Float(53)),
        sa.Column("low", sa.Float(53)),
        sa.Column("high", sa.Float(53)),
        sa.Column("explanation", sa.Text, nullable=False, server_default=""),
        sa.Column("severity", sa.String(32), nullable=False, server_default="warning"),
        sa.Column("kind", sa.String(32), nullable=False, server_default="deviation"),
    )
    op.create_index("ix_anomalies_device_metric_time", "anomalies", ["device", "metric", "time_ms"])
    op.create_index("ix_anomalies_time", "anomalies", ["time_ms"])
    op.create_table(
        "dead_letters",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("received_ms", MS, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_dead_letters_received", "dead_letters", ["received_ms"])
    op.create_table(
        "sequence_state",
        sa.Column("stream", sa.String(300), primary_key=True),
        sa.Column("epoch", MS, nullable=False),
        sa.Column("ranges", sa.JSON, nullable=False),
        sa.Column("received", MS, nullable=False),
        sa.Column("duplicates", MS, nullable=False),
        sa.Column("epochs_seen", MS, nullable=False),
    )
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for name in ("store_meta", "sequence_state", "dead_letters", "anomalies", "events", "detections",
                 "metric_rollups", "metric_samples", "births", "devices"):
        op.drop_table(name)
