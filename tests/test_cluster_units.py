"""[cluster] without a broker: the strict table, and a sharded ingest taking only its devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.config import CoordinatorConfig
from coordinator.ingest import Ingest, IngestBatch
from coordinator.processor import FleetProcessor
from coordinator.store.base import Store
from schemas.errors import ConfigError
from schemas.messages import MetricSample, MetricsBatch, encode_record
from schemas.sequence import DeviceSequence
from tests.test_store_support import StoreFactory, backend, open_backend

__all__ = ["backend", "open_backend"]  # the store fixtures, used by name

BROKER = {"host": "127.0.0.1", "port": 1883, "client_id": "c1"}


def test_a_cluster_table_is_read() -> None:
    config = CoordinatorConfig.from_mapping({"embedded_broker": False, "broker": BROKER,
                                             "cluster": {"group": "ingest", "settle_s": 1}})
    assert config.cluster is not None and config.cluster.group == "ingest" and config.cluster.member is None


@pytest.mark.parametrize(("data", "message"), [
    ({"cluster": {"grup": "x"}}, "unknown key 'grup'"),
    ({"cluster": {"member": "a/b"}}, "cluster:"),
    ({"cluster": {"settle_s": -1}}, "settle_s"),
    ({"cluster": "yes"}, "cluster must be a table"),
    ({"cluster": {}, "shared_group": "g"}, "remove shared_group"),
    ({"cluster": {}, "broker": {"host": "h"}}, "its own name"),
])
def test_bad_cluster_configuration_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CoordinatorConfig.from_mapping({"embedded_broker": False, "broker": BROKER, **data})


def test_a_cluster_needs_a_shared_broker() -> None:
    with pytest.raises(ConfigError, match="embedded_broker = false"):
        CoordinatorConfig.from_mapping({"cluster": {"member": "c1"}})


class Collected:
    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []

    def __call__(self, batch: IngestBatch) -> None:
        self.batches.append(batch)

    def seqs(self, device: str) -> list[int]:
        return [s.seq for b in self.batches for s in b.samples if s.device == device]


def metrics(device: str, first_seq: int, count: int, epoch: int = 7) -> ReceivedMessage:
    batch = MetricsBatch(device=device, epoch=epoch, first_seq=first_seq,
                         samples=tuple(MetricSample(1_000 + i, "cpu_percent", float(i))
                                       for i in range(count)))
    return ReceivedMessage(f"edgebus/{device}/metrics", encode_record(batch), 1, False)


def test_a_sharded_ingest_takes_only_its_devices_and_continues_their_accounting(tmp_path: Path) -> None:
    session = BusSession(BusConfig(client_id="c1", outbox_path=tmp_path / "outbox.db"))
    got = Collected()
    ingest = Ingest(session, [got], batch_wait=0.01, sharded=True)
    assert ingest.subscriptions() == ["edgebus/+/birth", "edgebus/+/status"]
    ingest.start()
    try:
        # gw-1 arrives with what its previous owner stored: 0..9 of epoch 7.
        ingest.take_devices({"gw-1"}, {"gw-1": DeviceSequence(epoch=7, ranges=[[0, 10]], received=10),
                                       "gw-2": DeviceSequence(epoch=7, ranges=[[0, 4]], received=4)})
        filters = {r.topic_filter for r in session.router.routes()}
        assert {"edgebus/gw-1/metrics", "edgebus/gw-1/detections/+", "edgebus/gw-1/events/+"} <= filters
        assert not any("gw-2" in f for f in filters)
        for message in (metrics("gw-1", 8, 4), metrics("gw-2", 0, 3)):
            ingest._enqueue(message)  # as the network thread hands messages over
        assert ingest.drain(10)
        assert got.seqs("gw-1") == [10, 11]  # 8 and 9 were stored by the previous owner
        assert got.seqs("gw-2") == [] and ingest.stats().not_owned == 1
        assert set(ingest.sequence_snapshot()) == {"gw-1"}
        ingest.drop_devices({"gw-1"})
        assert not any("gw-1" in r.topic_filter for r in session.router.routes())
        assert ingest.sequence_snapshot() == {} and ingest.owned() == frozenset()
        ingest._enqueue(metrics("gw-1", 12, 1))
        assert ingest.drain(10)
        assert got.seqs("gw-1") == [10, 11] and ingest.stats().not_owned == 2
    finally:
        ingest.stop()


def sharded_member(tmp_path: Path, store: Store, name: str, *,
                   cluster_member: bool = False) -> tuple[Ingest, FleetProcessor]:
    """A started sharded ingest and its processor on ``store``, not connected (messages go in by hand)."""
    session = BusSession(BusConfig(client_id=name, outbox_path=tmp_path / f"{name}.db"))
    ingest = Ingest(session, [], batch_wait=0.01, sharded=True)
    processor = FleetProcessor(session, ingest, store, AnomalyEngine(), data_dir=tmp_path / name,
                               pipeline=False, stored_acks=False)
    if cluster_member:
        (tmp_path / name).mkdir()
        processor.cluster_member = name
    ingest.sinks.append(processor)
    ingest.start()
    return ingest, processor


def test_a_moved_device_takes_its_anomaly_detectors_along_through_the_store(
        tmp_path: Path, open_backend: StoreFactory) -> None:
    """Released (a graceful move) or checkpointed (before a kill -9): the next owner's detectors go on."""
    store = open_backend()
    (ingest_a, a), (ingest_b, b), (ingest_c, c) = (sharded_member(tmp_path, store, name, cluster_member=True)
                                                   for name in ("c1", "c2", "c3"))
    try:
        a.take_devices({"gw-1"})
        for first in range(0, 300, 50):
            ingest_a._enqueue(metrics("gw-1", first, 50))
        assert ingest_a.drain(10)
        seen = a.engine.checkpoint_devices({"gw-1"})
        assert set(seen) == {"gw-1"}

        a.checkpoint()  # what a member keeps at each checkpoint: enough if it is then killed
        c.take_devices({"gw-1"})
        assert c.engine.checkpoint_devices({"gw-1"}) == seen

        a.release_devices({"gw-1"})  # a graceful move: kept, then forgotten here
        assert a.engine.checkpoint_devices({"gw-1"}) == {}
        b.take_devices({"gw-1"})
        assert b.engine.checkpoint_devices({"gw-1"}) == seen
        assert store.load_detector_states(["gw-1", "gw-9"]).keys() == {"gw-1"}

        b.take_devices({"gw-9"})  # nothing kept for it: it starts afresh
        assert b.engine.checkpoint_devices({"gw-9"}) == {}
    finally:
        for ingest in (ingest_a, ingest_b, ingest_c):
            ingest.stop()


@pytest.mark.parametrize("late", ["before", "after"])
def test_the_old_owners_late_batch_is_not_missing_at_the_new_owner(
        tmp_path: Path, open_backend: StoreFactory, late: str) -> None:
    """The two ends of a move do not wait for each other: the old owner commits a batch after the new one
    read the device's accounting, ``before`` or ``after`` the new owner's first commit. Those samples are
    stored once, so neither the store's accounting nor the new owner's may call them missing."""
    store = open_backend()

    def send(ingest: Ingest, first: int, count: int) -> None:
        ingest._enqueue(metrics("gw-1", first, count))  # as the network thread hands messages over
        assert ingest.drain(10)

    (ingest_a, a), (ingest_b, b) = (sharded_member(tmp_path, store, name) for name in ("c1", "c2"))
    try:
        a.take_devices({"gw-1"})
        send(ingest_a, 0, 100)
        b.take_devices({"gw-1"})  # reads 0..99 from the store
        if late == "before":
            send(ingest_a, 100, 50)  # the old owner's last batch, committed after that read
            a.release_devices({"gw-1"})
            send(ingest_b, 150, 50)
        else:
            send(ingest_b, 150, 50)
            send(ingest_a, 100, 50)
            a.release_devices({"gw-1"})
            send(ingest_b, 200, 10)  # the new owner's next commit brings the store's account in
        last = 200 if late == "before" else 210
        assert store.count_samples("gw-1") == last
        stored = store.load_sequence_state()["gw-1"]
        assert (stored.ranges, stored.received, stored.missing) == ([[0, last]], last, 0)
        state = ingest_b.sequence_snapshot()["gw-1"]
        assert (state.ranges, state.received, state.missing) == ([[0, last]], last, 0)
        send(ingest_b, 120, 5)  # a resend of the late batch is a repeat at the new owner too
        assert ingest_b.sequence_snapshot()["gw-1"].duplicates == 5 and store.count_samples("gw-1") == last
    finally:
        for ingest in (ingest_a, ingest_b):
            ingest.stop()
