"""Anomalies carry a calibrated score in [0, 1] beside the detector's own score (nullable: older rows
and detectors that do not estimate one have none).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("anomalies") as batch:
        batch.add_column(sa.Column("calibrated", sa.Float(53)))


def downgrade() -> None:
    with op.batch_alter_table("anomalies") as batch:
        batch.drop_column("calibrated")
