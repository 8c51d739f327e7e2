"""The ``[ingest]`` limits: each refusal a dead letter with its reason and a counter, the rest unharmed.

Most tests inject messages at the session boundary (the handlers ingest
subscribes), with a clock the test moves; one runs a flood through Mosquitto.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub

from broker.router import Handler, ReceivedMessage
from broker.session import BusSession
from coordinator.config import CoordinatorConfig
from coordinator.ingest import Ingest, IngestBatch
from coordinator.ingest_limits import IngestLimits
from schemas.errors import ConfigError
from schemas.messages import (
    Birth,
    Detection,
    DetectionsBatch,
    FrameDetections,
    MetricSample,
    MetricsBatch,
    encode_record,
)
from schemas.topics import TopicTree
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, config_for, wait_until

NOW_MS = 1_763_900_000_000
EPOCH = NOW_MS - 3_600_000


class Boundary:
    """What ingest uses of a session: its topics, and the handlers it subscribes (messages go in there)."""

    def __init__(self) -> None:
        self.topics = TopicTree("edgebus")
        self.handlers: list[tuple[str, Handler]] = []

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        self.handlers.append((topic_filter, handler))

    def deliver(self, topic: str, payload: bytes) -> None:
        handler = next(h for f, h in self.handlers if topic_matches_sub(f, topic))
        handler(ReceivedMessage(topic, payload, 1, False))


class Rows:
    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []
        self._lock = threading.Lock()

    def __call__(self, batch: IngestBatch) -> None:
        with self._lock:
            self.batches.append(batch)

    def samples(self, device: str) -> int:
        with self._lock:
            return sum(len(r.times) for b in self.batches for r in b.metric_runs if r.device == device)

    def reasons(self) -> list[str]:
        with self._lock:
            return [d.reason for b in self.batches for d in b.dead_letters]


class Harness:
    def __init__(self, **limits: Any) -> None:
        self.clock = [0.0]
        self.session = Boundary()
        self.rows = Rows()
        self.ingest = Ingest(self.session, [self.rows], batch_wait=0.005,  # type: ignore[arg-type]
                             clock_ms=lambda: NOW_MS, limits=IngestLimits(**limits),
                             rate_clock=lambda: self.clock[0]).start()

    def send(self, topic: str, payload: bytes) -> None:
        self.session.deliver(topic, payload)

    def settle(self) -> None:
        assert self.ingest.drain(WAIT)

    def stop(self) -> None:
        self.ingest.stop()


@pytest.fixture
def harness() -> Callable[..., Harness]:
    made: list[Harness] = []

    def make(**limits: Any) -> Harness:
        made.append(Harness(**limits))
        return made[-1]

    yield make  # type: ignore[misc]
    for h in made:
        h.stop()


def metrics(device: str, first_seq: int, count: int, *, epoch: int = EPOCH, names: int = 1,
            t0: int = NOW_MS - 60_000, step_ms: int = 1000) -> bytes:
    return encode_record(MetricsBatch(device=device, epoch=epoch, first_seq=first_seq, samples=tuple(
        MetricSample(t0 + i * step_ms, f"m{i % names}", float(i)) for i in range(count))))


def detections(device: str, camera: str, first_seq: int, frames: int, per_frame: int = 1) -> bytes:
    return encode_record(DetectionsBatch(device=device, camera=camera, epoch=EPOCH, first_seq=first_seq,
                                         frames=tuple(FrameDetections(NOW_MS - 1000 + i, tuple(
                                             Detection("person", 0.9, (0.1, 0.1, 0.5, 0.5))
                                             for _ in range(per_frame))) for i in range(frames))))


def birth(device: str, epoch: int) -> bytes:
    return encode_record(Birth(device=device, epoch=epoch, agent_version="1", time_ms=NOW_MS))


# -- configuration -------------------------------------------------------------------------------------


def test_the_ingest_table_is_strict_and_reaches_the_limits() -> None:
    config = CoordinatorConfig.from_mapping({"ingest": {"max_samples": 50, "device_messages_per_s": 2.5}})
    assert config.ingest == IngestLimits(max_samples=50, device_messages_per_s=2.5)
    assert CoordinatorConfig.from_mapping({}).ingest == IngestLimits()
    with pytest.raises(ConfigError, match=r"unknown key ingest\.max_sample;"):
        CoordinatorConfig.from_mapping({"ingest": {"max_sample": 50}})
    for bad in ({"max_samples": 0}, {"max_samples": 1.5}, {"max_samples": True}, {"burst_s": -1},
                {"burst_s": float("nan")}, {"max_name_chars": 129}, {"max_payload_bytes": 8}):
        with pytest.raises(ConfigError, match="ingest"):
            IngestLimits.from_mapping(bad).codec()
    with pytest.raises(ConfigError, match=r"ingest must be a table"):
        CoordinatorConfig.from_mapping({"ingest": 3})


# -- one refusal per limit -----------------------------------------------------------------------------


REFUSALS: list[tuple[str, dict[str, Any], str, bytes]] = [
    ("too_large", {"max_payload_bytes": 100}, "edgebus/d/metrics", metrics("d", 0, 50)),
    ("too_large", {"max_objects": 50}, "edgebus/d/metrics", metrics("d", 0, 50)),
    ("too_many_samples", {"max_samples": 10}, "edgebus/d/metrics", metrics("d", 0, 11)),
    ("too_many_samples", {"max_samples": 10}, "edgebus/d/detections/cam", detections("d", "cam", 0, 11)),
    ("too_many_detections", {"max_detections": 10}, "edgebus/d/detections/cam",
     detections("d", "cam", 0, 3, per_frame=4)),
    ("too_many_names", {"max_names": 3}, "edgebus/d/metrics", metrics("d", 0, 8, names=4)),
    ("too_many_names", {"max_device_names": 3}, "edgebus/d/metrics", metrics("d", 0, 8, names=4)),
    ("long_name", {"max_name_chars": 2}, "edgebus/d/metrics", metrics("d", 0, 20, names=20)),
    ("time_span", {"max_time_span_ms": 5_000}, "edgebus/d/metrics", metrics("d", 0, 7)),
    ("future_time", {}, "edgebus/d/metrics", metrics("d", 0, 1, t0=NOW_MS + 86_400_001)),
    ("implausible_epoch", {}, "edgebus/d/metrics", metrics("d", 0, 1, epoch=2**63 - 1)),
    ("implausible_epoch", {}, "edgebus/d/birth", birth("d", NOW_MS + 86_400_001)),
    ("too_large", {"max_payload_bytes": 100}, "edgebus/d/events/cam",
     json.dumps({"camera": "cam", "pad": "x" * 100}).encode()),
    ("device_mismatch", {}, "edgebus/d/events/cam", json.dumps({"camera": "other"}).encode()),
]


@pytest.mark.parametrize(("reason", "limits", "topic", "payload"), REFUSALS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSALS)])
def test_each_limit_refuses_with_its_reason_and_a_counter_and_the_rest_goes_on(
        harness: Callable[..., Harness], reason: str, limits: dict[str, Any], topic: str,
        payload: bytes) -> None:
    h = harness(**limits)
    h.send(topic, payload)
    h.send("edgebus/ok/metrics", metrics("ok", 0, 5))
    h.settle()
    assert h.rows.reasons() == [reason]
    assert h.ingest.stats().dead_letters == {reason: 1}
    assert h.rows.samples("ok") == 5 and h.rows.samples("d") == 0
    assert "d" not in h.ingest.sequence_snapshot()  # a refused message leaves no accounting behind


def test_names_per_device_add_up_across_messages(harness: Callable[..., Harness]) -> None:
    h = harness(max_device_names=10)
    h.send("edgebus/d/metrics", metrics("d", 0, 6, names=6))
    h.send("edgebus/d/metrics", metrics("d", 6, 6, names=6))  # the same names again
    others = tuple(MetricSample(NOW_MS - 1000, f"x{i}", 1.0) for i in range(5))
    h.send("edgebus/d/metrics", encode_record(MetricsBatch(device="d", epoch=EPOCH, first_seq=12,
                                                           samples=others)))  # 11 names: refused
    h.send("edgebus/d/metrics", metrics("d", 12, 6, names=6))
    h.settle()
    assert h.rows.reasons() == ["too_many_names"]
    assert h.rows.samples("d") == 18


def test_camera_streams_per_device_are_bounded(harness: Callable[..., Harness]) -> None:
    h = harness(max_device_cameras=2)
    for camera in ("a", "b", "c"):
        h.send(f"edgebus/d/detections/{camera}", detections("d", camera, 0, 1))
    h.send("edgebus/d/events/c", json.dumps({"camera": "c"}).encode())
    h.send("edgebus/d/events/a", json.dumps({"camera": "a"}).encode())
    h.settle()
    assert h.rows.reasons() == ["too_many_cameras", "too_many_cameras"]
    assert sorted(h.ingest.sequence_snapshot()) == ["d/a", "d/b"]


def test_devices_are_bounded(harness: Callable[..., Harness]) -> None:
    h = harness(max_devices=3)
    for k in range(5):
        h.send(f"edgebus/d{k}/metrics", metrics(f"d{k}", 0, 1))
    h.send("edgebus/d0/metrics", metrics("d0", 1, 1))
    h.settle()
    assert h.rows.reasons() == ["too_many_devices"] * 2
    assert sorted(h.ingest.sequence_snapshot()) == ["d0", "d1", "d2"]


# -- identity: epochs and sequence numbers ----------------------------------------------------------------


def test_an_epoch_moves_only_with_a_birth_that_announces_it(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.send("edgebus/d/metrics", metrics("d", 0, 5))
    h.send("edgebus/d/metrics", metrics("d", 0, 5, epoch=EPOCH + 1000))  # no birth said so
    h.send("edgebus/d/birth", birth("d", EPOCH + 1000))
    h.send("edgebus/d/metrics", metrics("d", 0, 5, epoch=EPOCH + 1000))
    h.send("edgebus/d/birth", birth("d", EPOCH))  # back: refused
    h.send("edgebus/d/metrics", metrics("d", 5, 5, epoch=EPOCH + 1000))
    h.settle()
    assert h.rows.reasons() == ["unannounced_epoch", "epoch_regress"]
    assert h.rows.samples("d") == 15
    assert [b.epoch for batch in h.rows.batches for b in batch.births] == [EPOCH + 1000]
    state = h.ingest.sequence_snapshot()["d"]
    assert (state.epoch, state.received, state.epochs_seen) == (EPOCH + 1000, 10, 2)


def test_a_sequence_jump_needs_a_second_batch_to_be_believed(harness: Callable[..., Harness]) -> None:
    h = harness(max_seq_gap=100)
    h.send("edgebus/d/metrics", metrics("d", 0, 5))
    h.send("edgebus/d/metrics", metrics("d", 2**62, 5))
    h.send("edgebus/d/metrics", metrics("d", 5, 5))
    h.settle()
    assert h.rows.reasons() == ["seq_jump"]
    state = h.ingest.sequence_snapshot()["d"]
    assert (state.received, state.missing) == (10, 0)
    h.send("edgebus/d/metrics", metrics("d", 5_000, 5))  # a device back from a long outage
    h.send("edgebus/d/metrics", metrics("d", 5_005, 5))
    h.settle()
    assert h.rows.reasons() == ["seq_jump", "seq_jump"]
    assert h.ingest.sequence_snapshot()["d"].received == 15


# -- rates -----------------------------------------------------------------------------------------------


def test_a_flooding_device_is_throttled_and_flagged_and_the_others_are_not(
        harness: Callable[..., Harness]) -> None:
    h = harness(device_messages_per_s=10, device_samples_per_s=1_000, burst_s=2)
    for i in range(100):
        h.send("edgebus/flood/metrics", metrics("flood", i, 1))
        if i % 10 == 0:
            h.send("edgebus/calm/metrics", metrics("calm", i // 10, 1))
    h.settle()
    assert h.rows.samples("flood") == 20  # the burst: 2 s of 10 messages/s
    assert h.rows.samples("calm") == 10
    stats = h.ingest.stats()
    assert stats.dead_letters == {"rate_limited": 80}
    assert stats.throttled == {"flood": 80} and stats.flagged == ["flood"]
    h.clock[0] += 1.0  # a second later: ten more messages are welcome
    for i in range(100, 112):
        h.send("edgebus/flood/metrics", metrics("flood", i, 1))
    h.settle()
    assert h.rows.samples("flood") == 30
    h.clock[0] += 120.0
    h.send("edgebus/calm/metrics", metrics("calm", 10, 1))
    h.settle()
    assert h.ingest.stats().flagged == []  # no longer flagged once it calmed down


def test_samples_count_against_a_device_rate_too(harness: Callable[..., Harness]) -> None:
    h = harness(device_samples_per_s=100, burst_s=1)
    h.send("edgebus/d/metrics", metrics("d", 0, 80))
    h.send("edgebus/d/metrics", metrics("d", 80, 80))
    h.send("edgebus/d/detections/cam", detections("d", "cam", 0, 30))
    h.send("edgebus/d/detections/cam", detections("d", "cam", 30, 1))
    h.settle()
    assert h.rows.reasons() == ["rate_limited", "rate_limited"]
    assert h.rows.samples("d") == 80


@pytest.mark.integration
def test_a_flood_through_mosquitto_is_throttled_while_another_device_is_stored_whole(
        mosquitto_broker: RunningBroker) -> None:
    rows = Rows()
    bus = BusSession(config_for(mosquitto_broker, client_id="coordinator"))
    ingest = Ingest(bus, [rows], batch_wait=0.01,
                    limits=IngestLimits(device_messages_per_s=20, burst_s=1)).start()
    bus.start()
    sender = BusSession(config_for(mosquitto_broker, client_id="sender"))
    sender.start()
    try:
        assert bus.wait_subscribed(WAIT) and sender.wait_connected(WAIT)
        t0 = time.time_ns() // 1_000_000 - 60_000
        epoch = t0 - 1_000
        for i in range(2_000):
            sender.publish("edgebus/flood/metrics", metrics("flood", i, 1, epoch=epoch, t0=t0))
            if i % 100 == 0:
                sender.publish("edgebus/calm/metrics", metrics("calm", i // 100, 1, epoch=epoch, t0=t0))
        assert sender.flush(WAIT)
        assert wait_until(lambda: ingest.stats().messages == 2_020)
        assert ingest.drain(WAIT)
        assert rows.samples("calm") == 20
        assert 20 <= rows.samples("flood") < 1_000  # the burst and what the rate refilled meanwhile
        stats = ingest.stats()
        assert stats.flagged == ["flood"] and stats.throttled["flood"] == 2_000 - rows.samples("flood")
        assert stats.dead_letters == {"rate_limited": stats.throttled["flood"]}
    finally:
        sender.stop()
        bus.stop()
        ingest.stop()
