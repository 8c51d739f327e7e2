"""The coordinator's path on a real broker: ingest -> score -> store -> announce, across a restart."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from broker.session import BusSession
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.ingest import Ingest, IngestBatch
from coordinator.processor import FleetProcessor
from coordinator.store.base import Store, open_store
from coordinator.store.plugins.sql import DEFAULT_DB_NAME
from coordinator.store.records import SampleRecord, WriteBatch, WriteResult
from schemas.errors import StoreError
from schemas.messages import MetricSample, MetricsBatch, encode_record
from schemas.topics import TopicTree
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, config_for, observer, wait_until
from tests.coordinator_helpers import start_coordinator, stop_coordinator

pytestmark = pytest.mark.integration

DEVICE = "gw-9"


def batch(first_seq: int, values: list[float]) -> bytes:
    return encode_record(MetricsBatch(device=DEVICE, epoch=7, first_seq=first_seq, samples=tuple(
        MetricSample(1_763_900_000_000 + (first_seq + i) * 1000, "cpu_percent", v)
        for i, v in enumerate(values))))


def normal(n: int, start: int) -> list[float]:
    return [20.0 + ((start + i) * 7 % 11 - 5) * 0.6 for i in range(n)]


def test_samples_stored_once_and_anomalies_announced_across_a_restart(
        broker: RunningBroker, tmp_path: Path) -> None:
    watcher, alerts = observer(broker, "edgebus/_anomaly/#", name="watcher")
    sender = BusSession(config_for(broker, client_id="sender"))
    sender.start()
    assert sender.wait_connected(WAIT)
    parts = start_coordinator(broker, tmp_path)
    try:
        sender.publish(f"edgebus/{DEVICE}/metrics", batch(0, normal(50, 0)))
        sender.publish(f"edgebus/{DEVICE}/metrics", batch(50, [97.0]))  # an incident
        sender.publish(f"edgebus/{DEVICE}/metrics", b"EB\x01 not a record")
        assert sender.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples(DEVICE) == 51)
        assert alerts.wait_for(lambda ms: len(ms) == 1)
        alert = json.loads(alerts.messages[0].payload)
        assert alerts.messages[0].topic == f"edgebus/_anomaly/{DEVICE}/cpu_percent"
        assert alert["value"] == 97.0 and alert["score"] > alert["threshold"]
        assert alert["expected"]["low"] < 20 < alert["expected"]["high"]
        assert wait_until(lambda: len(parts[3].dead_letters()) == 1)
        assert len(parts[3].anomalies(DEVICE)) == 1
    finally:
        stop_coordinator(parts)
    # A restarted coordinator gets redeliveries (the same batches again) and new samples.
    parts = start_coordinator(broker, tmp_path)
    try:
        sender.publish(f"edgebus/{DEVICE}/metrics", batch(0, normal(50, 0)))
        sender.publish(f"edgebus/{DEVICE}/metrics", batch(50, [97.0]))
        sender.publish(f"edgebus/{DEVICE}/metrics", batch(51, normal(20, 51)))
        assert sender.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples(DEVICE) == 71)
        assert parts[1].drain(WAIT)
        assert parts[1].stats().duplicates == 51  # dropped by sequence, not re-scored
        assert len(parts[3].anomalies(DEVICE)) == 1
        assert len(alerts.messages) == 1
        state = parts[1].sequence_snapshot()[DEVICE]
        assert (state.received, state.missing) == (71, 0)
    finally:
        stop_coordinator(parts)
        sender.stop()
        watcher.stop()


class FakeSession:
    """Just enough of a BusSession for a processor that is handed batches directly."""

    def __init__(self) -> None:
        self.topics = TopicTree("edgebus")
        self.published: list[str] = []

    def publish(self, topic: str, payload: object, **_: object) -> None:
        self.published.append(topic)


class GatedStore:
    """A store whose writes wait for ``gate`` and refuse any batch from device ``bad``."""

    shared_transactions = True

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def write_batches(self, batches: list[WriteBatch]) -> list[WriteResult]:
        self.entered.set()
        self.gate.wait(WAIT)
        self.calls.append(len(batches))
        if any(c.device == "bad" for b in batches for c in b.sample_columns):
            raise StoreError("refused")
        return self.store.write_batches(batches)


def test_a_locked_store_holds_ingest_and_loses_nothing(broker: RunningBroker, tmp_path: Path) -> None:
    """The database is unavailable for a while (locked by another program): the writer waits, retries."""
    sender = BusSession(config_for(broker, client_id="sender"))
    sender.start()
    assert sender.wait_connected(WAIT)
    parts = start_coordinator(broker, tmp_path, store_config={"busy_timeout_ms": 50})
    try:
        sender.publish(f"edgebus/{DEVICE}/metrics", batch(0, normal(50, 0)))
        assert wait_until(lambda: parts[3].count_samples(DEVICE) == 50)
        locker = sqlite3.connect(tmp_path / DEFAULT_DB_NAME, timeout=10)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            for first in range(50, 80, 10):
                sender.publish(f"edgebus/{DEVICE}/metrics", batch(first, normal(10, first)))
            assert sender.flush(WAIT)
            assert wait_until(lambda: parts[2].write_retries > 0), "the writer never met the lock"
        finally:
            locker.rollback()
            locker.close()
        assert wait_until(lambda: parts[3].count_samples(DEVICE) == 80)
        assert parts[2].write_errors == 0
    finally:
        stop_coordinator(parts)
        sender.stop()


def test_the_writer_thread_stores_in_order_and_a_failing_batch_costs_only_itself(tmp_path: Path) -> None:
    store = open_store({}, data_dir=tmp_path)
    gated = GatedStore(store)
    session = FakeSession()
    processor = FleetProcessor(session, Ingest(session), gated, AnomalyEngine(  # type: ignore[arg-type]
        {"detector": {"warmup": 30}}), data_dir=tmp_path)
    try:
        def rows(device: str, first: int, values: list[float]) -> list[SampleRecord]:
            return [SampleRecord(device, 1, first + i, 1_763_900_000_000 + (first + i) * 1000, "cpu", v)
                    for i, v in enumerate(values)]

        processor(IngestBatch(samples=rows("gw-1", 0, normal(50, 0))))  # held at the gate
        assert gated.entered.wait(WAIT)
        processor(IngestBatch(samples=rows("gw-1", 50, [97.0])))  # these two queue up behind it
        processor(IngestBatch(samples=rows("bad", 0, [1.0])))
        assert processor.flush(0.05) is False
        gated.gate.set()
        assert processor.flush(WAIT)
        assert gated.calls == [1, 2, 1, 1]  # the two shared a transaction, which failed: each alone
        processor(IngestBatch(samples=rows("gw-1", 51, [20.0])))
        assert processor.flush(WAIT)
        assert store.count_samples("gw-1") == 52 and store.count_samples("bad") == 0
        assert processor.write_errors == 1 and processor.stored_samples == 52
        assert processor.alerts == 1 and session.published == ["edgebus/_anomaly/gw-1/cpu"]
        assert len(store.anomalies("gw-1")) == 1
    finally:
        processor.stop()
        store.close()
