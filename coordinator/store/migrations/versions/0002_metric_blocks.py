"""Metric samples move from a row per sample to compressed blocks (metric_blocks).

Existing samples are carried over: each device's samples of one epoch, in
sequence order, are packed into blocks of up to 1,000 samples (format 1 of
coordinator/store/blocks.py). The downgrade unpacks them into rows again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op

from coordinator.store.blocks import blocks_of_rows, decode_block

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The tables below are written out as they stood at this revision, on purpose: a migration is a
# snapshot and must not follow later edits to coordinator/store/tables.py, so it repeats them.
# _create_samples is 0001's metric_samples again, for the downgrade to restore.
MS = sa.BigInteger
_BLOCK_SAMPLES = 1000
_BLOCK_COLUMNS = ("device", "epoch", "first_seq", "last_seq", "count", "first_ms", "last_ms", "body")


def _create_blocks() -> None:
    op.create_table(
        "metric_blocks",
        sa.Column("device", sa.String(128), primary_key=True),
        sa.Column("epoch", MS, primary_key=True),
        sa.Column("first_seq", MS, primary_key=True),
        sa.Column("last_seq", MS, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_ms", MS, nullable=False),
        sa.Column("last_ms", MS, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_metric_blocks_device_first_ms", "metric_blocks", ["device", "first_ms"])
    op.create_index("ix_metric_blocks_first_ms", "metric_blocks", ["first_ms"])


def _create_samples() -> None:
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


def _chunks(rows: Iterator[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """Runs of at most _BLOCK_SAMPLES rows of one (device, epoch), from rows in that order."""
    for _, group in groupby(rows, key=lambda row: (row[0], row[1])):
        chunk: list[tuple[Any, ...]] = []
        for row in group:
            chunk.append(tuple(row))
            if len(chunk) == _BLOCK_SAMPLES:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _insert(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        statement = sa.table(table, *(sa.column(c) for c in columns)).insert()
        op.get_bind().execute(statement, [dict(zip(columns, row, strict=True)) for row in rows])


def upgrade() -> None:
    _create_blocks()
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT device, epoch, seq, time_ms, name, value FROM metric_samples "
                                "ORDER BY device, epoch, seq"))
    pending: list[tuple[Any, ...]] = []
    for chunk in _chunks(iter(rows)):
        blocks, _ = blocks_of_rows(chunk)
        pending += [block.row() for block in blocks]
        if len(pending) >= 100:
            _insert("metric_blocks", _BLOCK_COLUMNS, pending)
            pending = []
    _insert("metric_blocks", _BLOCK_COLUMNS, pending)
    op.drop_table("metric_samples")


def downgrade() -> None:
    _create_samples()
    conn = op.get_bind()
    blocks = conn.execute(sa.text("SELECT device, epoch, first_seq, body FROM metric_blocks"))
    for device, epoch, first_seq, body in blocks:
        block = decode_block(device, epoch, first_seq, body)
        _insert("metric_samples", ("device", "epoch", "seq", "time_ms", "name", "value"),
                [(device, epoch, seq, time_ms, name, value) for seq, time_ms, name, value in block.samples()])
    op.drop_table("metric_blocks")
