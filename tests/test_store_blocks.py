"""Metric samples in compressed blocks: the codec, the limits, and exactly-once whatever the batching."""

from __future__ import annotations

import random
import threading
from typing import Any

import msgpack
import pytest
import sqlalchemy as sa
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from coordinator.store import SampleRecord, WriteBatch
from coordinator.store import migrate as migrations
from coordinator.store.blocks import (
    MAX_SEQ_SPAN,
    MAX_TIME_SPAN_MS,
    Block,
    blocks_of_rows,
    blocks_of_runs,
    decode_block,
    split_run,
)
from schemas.errors import StoreError
from schemas.metrics import MetricColumns
from tests.test_store_support import StoreFactory, backend, open_backend

__all__ = ["backend", "open_backend"]

T0 = 1_763_900_000_000


def block(first: int, count: int, *, seqs: list[int] | None = None, step_ms: int = 1000) -> Block:
    return Block("gw-1", 1, first if seqs is None else seqs[0], seqs, ["cpu", "mem"],
                 [i % 2 for i in range(count)], [T0 + i * step_ms for i in range(count)],
                 [i * 0.1 - 3e9 if i % 3 else float(i) for i in range(count)])


@pytest.mark.parametrize("seqs", [None, [3, 5, 6, 90]])
def test_a_block_round_trips_through_its_stored_body(seqs: list[int] | None) -> None:
    original = block(3, 4, seqs=seqs)
    device, epoch, first_seq, last_seq, count, first_ms, last_ms, body = original.row()
    assert (first_seq, last_seq, count, first_ms, last_ms) == (3, 6 if seqs is None else 90, 4, T0, T0 + 3000)
    decoded = decode_block(device, epoch, first_seq, body)
    assert list(decoded.samples()) == list(original.samples())
    assert decoded.last_seq == original.last_seq


def test_a_body_of_another_format_or_garbage_is_refused_clearly() -> None:
    future = zstandard.ZstdCompressor().compress(msgpack.packb([2, ["cpu"], None, ["H", b""], b"", b""]))
    with pytest.raises(StoreError, match=r"format 2.*reads format 1"):
        decode_block("gw-1", 1, 0, future)
    with pytest.raises(StoreError, match="cannot be read"):
        decode_block("gw-1", 1, 0, b"not a block")


@given(st.lists(st.tuples(st.integers(0, 3 * MAX_SEQ_SPAN), st.integers(0, 3 * MAX_TIME_SPAN_MS)),
                min_size=1, max_size=60, unique_by=lambda p: p[0]))
def test_split_run_keeps_every_sample_once_within_the_limits(points: list[tuple[int, int]]) -> None:
    points.sort()
    seqs = [s for s, _ in points]
    whole = Block("gw-1", 1, seqs[0], seqs, ["cpu"], [0] * len(points), [t for _, t in points],
                  [float(s) for s in seqs])
    parts = split_run(whole)
    assert [s for part in parts for s in part.samples()] == list(whole.samples())
    for part in parts:
        assert part.last_seq - part.first_seq < MAX_SEQ_SPAN
        assert max(part.times) - min(part.times) <= MAX_TIME_SPAN_MS


def test_rows_become_blocks_in_sequence_order_with_repeats_counted() -> None:
    rows = [("gw-1", 1, 5, T0 + 5, "cpu", 5), ("gw-1", 1, 4, T0 + 4, "mem", 4.5),
            ("gw-1", 1, 5, T0 + 5, "cpu", 5), ("gw-1", 2, 0, T0, "cpu", 1.0)]
    blocks, repeats = blocks_of_rows(rows)
    assert repeats == 1
    assert [(b.epoch, list(b.samples())) for b in blocks] == [
        (1, [(4, T0 + 4, "mem", 4.5), (5, T0 + 5, "cpu", 5.0)]), (2, [(0, T0, "cpu", 1.0)])]


def test_redeliveries_in_any_batching_store_each_sample_once(open_backend: StoreFactory) -> None:
    """Random overlapping runs, as rows and as columns, over two epochs: the store holds their union."""
    store = open_backend()
    rng = random.Random(7)
    expected: set[tuple[int, int]] = set()
    new_total = 0
    for _ in range(40):
        epoch, first, count = rng.choice((1, 2)), rng.randrange(0, 300), rng.randrange(1, 60)
        seqs = range(first, first + count)
        if rng.random() < 0.5:
            batch = WriteBatch(sample_columns=[MetricColumns(
                "gw-1", epoch, first, ["cpu"], [0] * count, [T0 + s for s in seqs], [s * 0.5 for s in seqs])])
        else:
            picked = [s for s in seqs if rng.random() < 0.7] or [first]
            count = len(picked)
            batch = WriteBatch(samples=[SampleRecord("gw-1", epoch, s, T0 + s, "cpu", s * 0.5)
                                        for s in picked])
            seqs = range(0)
            expected_now = {(epoch, s) for s in picked}
        expected_now = expected_now if not seqs else {(epoch, s) for s in seqs}
        result = store.write_batch(batch)
        assert result.samples_new == len(expected_now - expected)
        assert result.samples_new + result.samples_duplicate == count
        new_total += result.samples_new
        expected |= expected_now
    stored = store.samples("gw-1", "cpu")
    assert sorted((s.epoch, s.seq) for s in stored) == sorted(expected)
    assert all(s.value == s.seq * 0.5 and s.time_ms == T0 + s.seq for s in stored)
    assert store.count_samples() == len(expected) == new_total


def test_migration_carries_row_samples_into_blocks_and_back(open_backend: StoreFactory) -> None:
    store = open_backend(migrate=False)
    if store.schema is not None:  # PostgreSQL: the test's own schema, as SqlStore.migrate makes it
        with store.engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{store.schema}"'))
    migrations.upgrade(store.engine, "0001")
    rows = [{"device": d, "epoch": 1, "seq": s, "time_ms": T0 + s, "name": ("cpu", "mem")[s % 2],
             "value": s / 4} for d in ("gw-1", "gw-2") for s in range(2500) if s % 7]
    with store.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO metric_samples (device, epoch, seq, time_ms, name, value) "
            "VALUES (:device, :epoch, :seq, :time_ms, :name, :value)"), rows)
    store.migrate()
    assert store.count_samples() == len(rows)
    assert [(s.seq, s.value) for s in store.samples("gw-2", "mem")] == [
        (r["seq"], r["value"]) for r in rows if r["device"] == "gw-2" and r["name"] == "mem"]
    migrations.downgrade(store.engine, "0001")
    with store.engine.connect() as conn:
        back = conn.execute(sa.text(
            "SELECT device, epoch, seq, time_ms, name, value FROM metric_samples ORDER BY device, seq")).all()
    assert [tuple(r) for r in back] == [tuple(r.values()) for r in rows]


def test_consecutive_runs_of_a_device_are_joined_into_one_block_and_read_back_alike() -> None:
    runs = [MetricColumns("gw-1", 1, 0, ["cpu", "mem"], [0, 1, 0], [T0, T0, T0 + 1], [1.0, 2.0, 3.0]),
            MetricColumns("gw-2", 1, 7, ["cpu"], [0], [T0], [9.0]),
            MetricColumns("gw-1", 1, 3, ["mem", "disk"], [1, 0], [T0 + 2, T0 + 2], [4.0, 5.0]),
            MetricColumns("gw-1", 1, 9, ["cpu"], [0], [T0 + 3], [6.0]),  # a gap: a new block
            MetricColumns("gw-1", 2, 10, ["cpu"], [0], [T0 + 4], [7.0])]  # a new epoch: a new block
    blocks = sorted(blocks_of_runs(runs), key=lambda b: (b.device, b.epoch, b.first_seq))
    assert [(b.device, b.epoch, b.first_seq, b.count) for b in blocks] == [
        ("gw-1", 1, 0, 5), ("gw-1", 1, 9, 1), ("gw-1", 2, 10, 1), ("gw-2", 1, 7, 1)]
    assert list(blocks[0].samples()) == [(0, T0, "cpu", 1.0), (1, T0, "mem", 2.0), (2, T0 + 1, "cpu", 3.0),
                                         (3, T0 + 2, "disk", 4.0), (4, T0 + 2, "mem", 5.0)]
    assert runs[0].times == [T0, T0, T0 + 1]  # the runs themselves are left as they were


def test_two_writers_storing_overlapping_runs_of_a_device_store_each_sample_once(
        open_backend: StoreFactory) -> None:
    """Two coordinators on one database (a shared subscription after a takeover): no sample twice."""
    stores = [open_backend(), open_backend()]
    errors: list[BaseException] = []

    def writer(store: Any, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                first, count = rng.randrange(0, 400), rng.randrange(1, 40)
                store.write_batch(WriteBatch(sample_columns=[MetricColumns(
                    "gw-1", 1, first, ["cpu"], [0] * count, [T0 + s for s in range(first, first + count)],
                    [float(s) for s in range(first, first + count)])]))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(store, seed)) for seed, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    seqs = [s.seq for s in stores[0].samples("gw-1", "cpu")]
    assert len(seqs) == len(set(seqs)) == stores[0].count_samples()
