"""Ingest on real brokers: decoded rows, exact de-duplication by sequence, dead letters."""

from __future__ import annotations

import math
import random
import threading

import pytest

from broker.session import BusSession
from broker.telemetry import MetricsPublisher
from coordinator.ingest import Ingest, IngestBatch
from schemas.detections import Detection, DetectionsBatch, FrameDetections
from schemas.envelope import EnvelopeCodec
from schemas.errors import CodecError
from schemas.messages import Birth, MetricSample, MetricsBatch, encode_record
from schemas.metrics import MetricColumns
from schemas.record_base import record_from_body
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


def test_the_column_decoder_accepts_exactly_what_the_record_decoder_does() -> None:
    """Whatever the body, MetricColumns.from_body gives the record's samples or leaves it to the records."""
    rng = random.Random(5)
    breakages = [("vals", math.nan), ("vals", math.inf), ("vals", True), ("vals", "x"), ("vals", 2**60),
                 ("vals", 1.5), ("vals", 2**64), ("idx", -1), ("idx", 99), ("idx", 1.0), ("dt", -2**50),
                 ("dt", 2**64), ("t0", -5), ("t0", 2**63), ("names", "bad/name"), ("names", 5),
                 ("scale", 23), ("scale", True), ("scale", None), ("extra", 1), ("device", "_x"), ("v", 2),
                 ("seq", 2**63 - 2), ("names_last", "bad/name"), ("idx", True), ("dt_last", -2**62),
                 ("dt_last", 2**63 - 1)]
    fast = 0
    for trial in range(600):
        names = [f"m{i}" for i in range(rng.randint(1, 4))]
        def value(decimals: bool = trial % 3 == 0) -> int | float:
            if decimals:
                return round(rng.uniform(0, 100), 2)
            return rng.choice([round(rng.uniform(-50, 50), rng.randint(0, 3)), rng.randint(-2**63, 2**63 - 1),
                               rng.randint(-9, 9), rng.uniform(-1e300, 1e300), -0.0, rng.random()])

        t = rng.randint(0, 2**40)
        samples = []
        cyclic = trial % 4 == 1  # the usual layout: the names in table order, over and over
        for i in range(rng.randint(0, 30)):
            t += rng.choice([0, 5, 1000])
            samples.append(MetricSample(t, names[i % len(names)] if cyclic else rng.choice(names), value()))
        record = MetricsBatch(device="gw-1", epoch=rng.randint(0, 3), first_seq=rng.randint(0, 99),
                              samples=samples)
        body = EnvelopeCodec().decode(encode_record(record))
        if trial % 2 and body["vals"]:
            key, bad = rng.choice(breakages)
            if key in ("names_last", "dt_last"):
                body[key[:-5]][-1] = bad
            elif key in ("vals", "idx", "dt", "names", "scale"):
                body[key][0] = bad
            else:
                body["zz" if key == "extra" else key] = bad
        try:
            expected: MetricsBatch | None = record_from_body(body)  # type: ignore[assignment]
        except CodecError:
            expected = None
        columns = MetricColumns.from_body(body)
        if columns is None:
            continue
        fast += 1
        assert expected is not None
        assert (columns.device, columns.epoch, columns.first_seq) == \
            (expected.device, expected.epoch, expected.first_seq)
        got = columns.samples()
        assert got == list(expected.samples)
        assert [(type(s.value), math.copysign(1, s.value)) for s in got] == \
            [(type(s.value), math.copysign(1, s.value)) for s in expected.samples]
        assert columns.values == [float(s.value) for s in expected.samples]
        assert {type(v) for v in columns.values} <= {float}
    assert fast > 250
