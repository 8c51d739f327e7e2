"""PostgreSQL's bulk path (COPY) against the store's insert of sample blocks, on one server.

    python bench/store_copy.py [--url postgresql://postgres@127.0.0.1:5432/test]
                               [--devices 50] [--messages 40] [--per-write 64]

Issue 18 asks whether COPY would serve several coordinators writing into one
PostgreSQL better than today's insert. The store writes each ingest batch's
blocks (one row per device message, zstd over packed columns) in one
transaction with ``INSERT ... SELECT * FROM unnest(arrays) ON CONFLICT DO
NOTHING RETURNING count``: already one statement per batch, not a row each.
Measured here, same rows, same transaction size, in a private schema that is
dropped afterwards:

* insert (today, the baseline): what ``coordinator.store.sql_write._insert_blocks`` runs;
* COPY + merge: ``COPY`` into a temporary staging table, then ``INSERT ...
  SELECT ... ON CONFLICT DO NOTHING`` (what exactly-once needs: COPY alone
  cannot skip a key a concurrent writer took);
* COPY alone into the table (the ceiling; unusable as is, it fails the whole
  batch on one duplicate key).

Prints rows/s and samples/s for each and the ratio to today's insert. The
issue asks for the comparison, not a target for it; the target checked is
that today's insert keeps ahead of what several coordinators send one
PostgreSQL: at least 3 x 100,000 samples/s (issue 18's three coordinators,
each at bench/ingest.py's 100,000 samples/s target).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from bench.results import record, verdict
from coordinator.store import (
    SqlStore,
    tables,
)
from coordinator.store.blocks import Block
from coordinator.store.sql_engine import normalise_url
from coordinator.store.sql_write import _BLOCK_COLUMNS, _BLOCK_TYPES, _bulk_insert_ignore

SAMPLES_PER_MESSAGE = 100
INSERT_TARGET = 3 * 100_000  # samples/s: three coordinators, each at bench/ingest.py's target
NAMES = ("cpu_percent", "mem_percent", "temp_c", "disk_read_bytes", "disk_write_bytes")


def make_blocks(devices: int, messages: int, rng: random.Random) -> list[Block]:
    """``messages`` consecutive 100-sample messages per device, as ingest turns them into blocks."""
    blocks = []
    for d in range(devices):
        for m in range(messages):
            first = m * SAMPLES_PER_MESSAGE
            seqs = list(range(first, first + SAMPLES_PER_MESSAGE))
            idx = [i % len(NAMES) for i in range(SAMPLES_PER_MESSAGE)]
            times = [1_700_000_000_000 + s * 200 for s in seqs]
            values = [round(rng.gauss(50, 10), 2) for _ in seqs]
            blocks.append(Block.numbered(f"gw-{d}", 1, seqs, NAMES, idx, times, values))
    rng.shuffle(blocks)  # ingest batches mix devices
    return blocks


def copy_merge(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    raw = conn.connection.driver_connection
    assert raw is not None
    names = ", ".join(_BLOCK_COLUMNS)
    with raw.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS staging_blocks (LIKE metric_blocks) "
                    "ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY staging_blocks ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(f"INSERT INTO metric_blocks ({names}) SELECT {names} FROM staging_blocks "
                    "ON CONFLICT DO NOTHING RETURNING count")
        return sum(count for (count,) in cur.fetchall())


def copy_only(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    raw = conn.connection.driver_connection
    assert raw is not None
    names = ", ".join(_BLOCK_COLUMNS)
    with raw.cursor() as cur, cur.copy(f"COPY metric_blocks ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return sum(row[4] for row in rows)


Write = Callable[[sa.Connection, list[tuple[Any, ...]]], int]


def timed(store: SqlStore, blocks: Sequence[Block], per_write: int, write: Write) -> tuple[float, int]:
    """Seconds to write every block, ``per_write`` blocks a transaction (the same rows for every path,
    compressed inside the timing as ingest does)."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE metric_blocks"))
    samples = 0
    started = time.perf_counter()
    for start in range(0, len(blocks), per_write):
        part = blocks[start:start + per_write]
        with store.engine.begin() as conn:
            samples += write(conn, [block.row() for block in part])
    return time.perf_counter() - started, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EDGEBUS_TEST_POSTGRES_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--messages", type=int, default=40, help="100-sample messages per device")
    parser.add_argument("--per-write", type=int, default=64, help="blocks per transaction (an ingest batch)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per path")
    args = parser.parse_args()

    blocks = make_blocks(args.devices, args.messages, random.Random(7))
    schema = f"bench_copy_{uuid.uuid4().hex[:12]}"
    store = SqlStore.open(args.url, schema=schema)
    store.migrate()
    paths: dict[str, Write] = {
        "insert (today)": lambda conn, rows: _bulk_insert_ignore(  # what _insert_blocks runs
            conn, tables.metric_blocks, _BLOCK_COLUMNS, _BLOCK_TYPES, rows, weight="count"),
        "COPY + merge": copy_merge,
        "COPY alone (ceiling)": copy_only,
    }
    try:
        print(f"{len(blocks)} blocks ({len(blocks) * SAMPLES_PER_MESSAGE:,} samples) from "
              f"{args.devices} devices, {args.per_write} blocks a transaction, best of {args.repeat}; "
              f"PostgreSQL {store.engine.dialect.server_version_info}")
        baseline = None
        for name, write in paths.items():
            best, samples = min(timed(store, blocks, args.per_write, write) for _ in range(args.repeat))
            assert samples == len(blocks) * SAMPLES_PER_MESSAGE, (name, samples)
            rate = len(blocks) / best
            samples_per_s = rate * SAMPLES_PER_MESSAGE
            if baseline is None:  # today's insert: the baseline of the others, and the one with a target
                baseline = rate
                ok = samples_per_s >= INSERT_TARGET
                record("PostgreSQL insert of sample blocks", samples_per_s, "samples/s",
                       target=f">= {INSERT_TARGET:,} (3 coordinators at the ingest target)", ok=ok)
                judged = f"target >= {INSERT_TARGET:,} samples/s: {verdict(ok)}"
            else:
                judged = "no issue target"
            print(f"  {name:22s} {rate:9,.0f} blocks/s  {samples_per_s:12,.0f} samples/s  "
                  f"{rate / baseline:5.2f}x today's insert  ({judged})")
    finally:
        store.close()
        engine = sa.create_engine(normalise_url(args.url))
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
