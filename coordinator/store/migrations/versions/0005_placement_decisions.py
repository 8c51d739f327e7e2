"""The load balancer's decisions: each move started and ended, takeovers, changes of controls.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "placement_decisions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("time_ms", sa.BigInteger, nullable=False),
        sa.Column("placer", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("workload", sa.String(128)),
        sa.Column("source", sa.String(128)),
        sa.Column("target", sa.String(128)),
        sa.Column("reason", sa.String(32)),
        sa.Column("outcome", sa.Text),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_placement_decisions_time", "placement_decisions", ["time_ms"])


def downgrade() -> None:
    op.drop_index("ix_placement_decisions_time", table_name="placement_decisions")
    op.drop_table("placement_decisions")
