"""Ingest on real brokers: decoded rows, exact de-duplication by sequence, dead letters."""

from __future__ import annotations

import threading

import pytest

from broker.session import BusSession
from broker.telemetry import MetricsPublisher
from coordinator.ingest import Ingest, IngestBatch
from schemas.detections import Detection, DetectionsBatch, FrameDetections
from schemas.envelope import EnvelopeCodec
from schemas.messages import Birth, MetricSample, MetricsBatch, encode_record
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, config_for, wait_until

pytestmark = pytest.mark.integration


class Collected:
    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []
        self._lock = threading.Lock()

    def __call__(self, batch: IngestBatch) -> None:
        with self._lock:
            self.batches.append(batch)

    def all(self, field: str) -> list[object]:
        with self._lock:
            return [row for b in self.batches for row in getattr(b, field)]


def coordinator(broker: RunningBroker, *sinks: object) -> tuple[BusSession, Ingest]:
    bus = BusSession(config_for(broker, client_id="coordinator"))
    ingest = Ingest(bus, list(sinks), batch_wait=0.01).start()  # type: ignore[arg-type]
    bus.start()
    assert bus.wait_connected(WAIT)
    return bus, ingest


def test_metrics_and_detections_arrive_once_by_sequence(broker: RunningBroker) -> None:
    got = Collected()
    bus, ingest = coordinator(broker, got)
    device = BusSession(config_for(broker, device="gw-1", client_id="gw-1"))
    try:
        device.start()
        assert device.wait_connected(WAIT)
        pub = MetricsPublisher(device)
        for i in range(5):
            assert pub.publish([MetricSample(1_000 + i, "cpu_percent", float(i)),
                                MetricSample(1_000 + i, "temp_c", 40 + i)])
        batch = MetricsBatch(device="gw-1", epoch=pub.epoch, first_seq=9,
                             samples=(MetricSample(1, "cpu_percent", 9.0),) * 2)
        device.publish("edgebus/gw-1/metrics", encode_record(batch))  # seq 9 again, then 10: new
        frames = tuple(FrameDetections(2_000 + i, (Detection("person", 0.9, (0.1, 0.1, 0.5, 0.9), 7),))
                       for i in range(3))
        det = encode_record(DetectionsBatch(device="gw-1", camera="door", epoch=5, first_seq=0,
                                            frames=frames))
        device.publish("edgebus/gw-1/detections/door", det)
        device.publish("edgebus/gw-1/detections/door", det)  # a redelivery
        assert device.flush(WAIT)
        assert wait_until(lambda: ingest.stats().messages >= 9)
        assert ingest.drain(WAIT)
        samples = got.all("samples")
        assert sorted((s.seq, s.name) for s in samples) == sorted(  # type: ignore[attr-defined]
            [(2 * i + k, n) for i in range(5) for k, n in enumerate(("cpu_percent", "temp_c"))]
            + [(10, "cpu_percent")])
        seqs = [s.seq for s in samples]  # type: ignore[attr-defined]
        assert sorted(seqs) == list(range(11)) and len(seqs) == len(set(seqs))
        assert len(got.all("detections")) == 3
        stats = ingest.stats()
        assert stats.duplicates == 1 + 3  # one metrics sample, three frames
        accounting = ingest.sequence_snapshot()
        assert (accounting["gw-1"].received, accounting["gw-1"].missing) == (11, 0)
        assert accounting["gw-1/door"].received == 3
    finally:
        device.stop()
        bus.stop()
        ingest.stop()


def test_bad_messages_become_dead_letters_and_ingest_goes_on(broker: RunningBroker) -> None:
    got = Collected()

    def broken_sink(batch: IngestBatch) -> None:
        raise RuntimeError("a sink bug must not stop ingest")

    bus, ingest = coordinator(broker, broken_sink, got)
    sender = BusSession(config_for(broker, client_id="sender"))
    ok = encode_record(MetricsBatch(device="gw-1", epoch=1, first_seq=0,
                                    samples=(MetricSample(1, "x", 1.0),)))
    cases = {
        "malformed": ("edgebus/gw-1/metrics", b"EB\x01garbage"),
        "wrong_type": ("edgebus/gw-1/metrics", encode_record(Birth(
            device="gw-1", epoch=1, agent_version="1", time_ms=1))),
        "device_mismatch": ("edgebus/gw-2/metrics", ok),
        "unsupported_version": ("edgebus/gw-1/metrics", EnvelopeCodec().encode(
            {"type": "metrics", "v": 99, "device": "gw-1"})),
        "bad_json": ("edgebus/gw-1/events/door", b"{not json"),
    }
    try:
        sender.start()
        assert sender.wait_connected(WAIT)
        for topic, payload in cases.values():
            sender.publish(topic, payload)
        sender.publish("edgebus/gw-1/metrics", ok)
        assert sender.flush(WAIT)
        assert wait_until(lambda: len(got.all("samples")) == 1 and len(got.all("dead_letters")) == 5)
        reasons = sorted(d.reason for d in got.all("dead_letters"))  # type: ignore[attr-defined]
        assert reasons == sorted(cases)
        assert ingest.stats().sink_errors >= 1
        assert dict(ingest.stats().dead_letters) == dict.fromkeys(cases, 1)
    finally:
        sender.stop()
        bus.stop()
        ingest.stop()
