"""Anomalies can be acknowledged: who did it and when (the HTTP API's acknowledge endpoint).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("anomalies") as batch:
        batch.add_column(sa.Column("acknowledged_ms", sa.BigInteger))
        batch.add_column(sa.Column("acknowledged_by", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("anomalies") as batch:
        batch.drop_column("acknowledged_by")
        batch.drop_column("acknowledged_ms")
