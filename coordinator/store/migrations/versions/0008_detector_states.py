"""Each device's anomaly detectors as a checkpoint blob, handed from coordinator to coordinator ([cluster]).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "detector_states",
        sa.Column("device", sa.String(128), primary_key=True),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("time_ms", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("detector_states")
