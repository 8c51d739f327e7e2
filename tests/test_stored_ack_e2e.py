"""Issue 17, break 8: a broker killed with -9 must not lose samples its agent accepted.

The scenario: the coordinator is down, the agent keeps publishing and Mosquitto
(the generated configuration: persistence saved every 60 s) acknowledges every
batch; then Mosquitto is killed with -9, and both come back. With the broker's
PUBACK as the only acknowledgement, the agent's outbox had emptied and every
batch of the outage is gone (``end_to_end_ack = "off"``: the old behaviour, kept
here to show the scenario really loses them). With the coordinator's stored
acknowledgement the agent still holds them and sends them again: every sample
ends up in the store exactly once.

Real Mosquitto with a per-device user from the generated ACL (the device reads
its acknowledgement on ``{root}/{device}/cmd/stored``), a real SQLite store.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from broker.credentials import Credentials, generate_password
from broker.mosquitto_config import MosquittoSite
from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher
from coordinator.store.blocks import decode_block
from coordinator.store.plugins.sql import DEFAULT_DB_NAME
from schemas.messages import MetricSample
from schemas.stored_ack import METRICS_STREAM, StoredAck, StreamAck
from tests.brokers import MosquittoUnderTest, RunningBroker, free_port
from tests.bus_helpers import WAIT, config_for, wait_until
from tests.coordinator_helpers import Parts, start_coordinator, stop_coordinator

pytestmark = pytest.mark.integration

DEVICE = "break8-gw"
OUTAGE_BATCHES = 42
BATCH = 10


class Publisher:
    """Publishes a batch of ``BATCH`` samples every ``period`` seconds on a thread, until stopped."""

    def __init__(self, metrics: MetricsPublisher, period: float = 0.1) -> None:
        self.metrics = metrics
        self.period = period
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publish_one(self) -> None:
        now = time.time_ns() // 1_000_000
        samples = [MetricSample(time_ms=now, name="temp", value=float(i)) for i in range(BATCH)]
        if self.metrics.publish(samples):
            self.accepted += BATCH

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.publish_one()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(WAIT)


def stored_seqs(db: Path) -> list[tuple[int, int]]:
    """(epoch, seq) of every stored sample of the device, repeats included."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT epoch, first_seq, body FROM metric_blocks WHERE device = ?",
                            (DEVICE,)).fetchall()
    return [(epoch, seq) for epoch, first_seq, body in rows
            for seq, *_ in decode_block(DEVICE, epoch, first_seq, body).samples()]


def _broker(tmp_path: Path, device: Credentials) -> MosquittoUnderTest:
    admin = Credentials("coordinator", generate_password())
    site = MosquittoSite(listener_host="127.0.0.1", port=free_port(), data_dir=tmp_path / "mq-data",
                         devices=[device], coordinators=[admin])
    return MosquittoUnderTest(tmp_path / "mq", site=site)


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_broker_killed_while_coordinator_down_loses_nothing(tmp_path: Path, mode: str) -> None:
    device = Credentials(DEVICE, generate_password())
    mq = _broker(tmp_path, device)
    mq.start()
    data = tmp_path / "coordinator"
    parts: Parts | None = start_coordinator(mq, data, client_id="coordinator-b8", clean_start=False)
    session = BusSession(BusConfig(host=mq.host, port=mq.port, username=device.username,
                                   password=device.password, device=DEVICE,
                                   outbox_path=tmp_path / "agent" / "outbox.sqlite",
                                   reconnect_min_delay=0.05, reconnect_max_delay=0.5,
                                   end_to_end_ack=mode, ack_timeout=1.0))  # type: ignore[arg-type]
    publisher = Publisher(MetricsPublisher(session))
    session.start()
    try:
        assert session.wait_connected(WAIT) and session.wait_subscribed(WAIT)
        assert parts is not None
        store = parts[3]
        for _ in range(5):
            publisher.publish_one()
        assert wait_until(lambda: store.count_samples(DEVICE) == publisher.accepted), "nothing stored"
        if mode == "auto":  # the coordinator acknowledged: from now on the agent waits for it
            assert wait_until(lambda: session.waits_for_coordinator and len(session.outbox) == 0)
        else:
            assert not session.waits_for_coordinator

        # The coordinator goes away; the broker acknowledges every batch of the outage.
        stop_coordinator(parts)
        parts = None
        for _ in range(OUTAGE_BATCHES):
            publisher.publish_one()
        assert wait_until(lambda: session.stats().acknowledged >= 5 + OUTAGE_BATCHES)
        held = len(session.outbox)
        assert held == (OUTAGE_BATCHES if mode == "auto" else 0)

        # kill -9 before its 60 s autosave: the queued batches and the coordinator's session are gone.
        mq.kill()
        mq.start()
        parts = start_coordinator(mq, data, client_id="coordinator-b8", clean_start=False)
        store = parts[3]
        publisher.start()  # the agent carries on; its later batches show the coordinator is alive
        before_stop = publisher.accepted
        assert wait_until(lambda: store.count_samples(DEVICE) >= before_stop - held * BATCH + 10 * BATCH, 60)
        publisher.stop()
        assert session.flush(WAIT), f"{len(session.outbox)} rows never confirmed"
        lost = OUTAGE_BATCHES * BATCH if mode == "off" else 0
        assert wait_until(lambda: store.count_samples(DEVICE) == publisher.accepted - lost), (
            f"stored {store.count_samples(DEVICE)} of {publisher.accepted} accepted (expected {lost} lost)")
        seqs = stored_seqs(data / DEFAULT_DB_NAME)
        assert len(seqs) == len(set(seqs)), "a sample is stored twice"
        assert len({epoch for epoch, _ in seqs}) == 1
        numbers = {seq for _, seq in seqs}
        if mode == "off":  # the old behaviour: exactly the outage's samples are gone
            assert numbers == set(range(publisher.accepted)) - set(range(5 * BATCH, 5 * BATCH + lost))
        else:
            assert numbers == set(range(publisher.accepted))
            assert session.stats().confirmed >= OUTAGE_BATCHES
    finally:
        publisher.stop()
        session.stop(flush_timeout=0)
        if parts is not None:
            stop_coordinator(parts)
        mq.stop()


def test_unconfirmed_batch_goes_again_until_an_ack_covers_it(tmp_path: Path) -> None:
    """No coordinator at all: the broker's PUBACK does not release the batch; it is sent again
    (with a growing pause) until an acknowledgement covering it arrives; then it leaves the outbox."""
    device = Credentials(DEVICE, generate_password())
    mq = _broker(tmp_path, device)
    mq.start()
    watcher = BusSession(BusConfig(host=mq.host, port=mq.port, username=mq.username, password=mq.password,
                                   client_id="watcher", clean_start=True))
    copies: list[bytes] = []
    watcher.subscribe(f"edgebus/{DEVICE}/metrics", lambda m: copies.append(m.payload))
    watcher.start()
    session = BusSession(BusConfig(host=mq.host, port=mq.port, username=device.username,
                                   password=device.password, device=DEVICE, clean_start=True,
                                   end_to_end_ack="required", ack_timeout=0.5))
    metrics = MetricsPublisher(session)
    session.start()
    try:
        assert watcher.wait_subscribed(WAIT) and session.wait_subscribed(WAIT)
        Publisher(metrics).publish_one()
        assert wait_until(lambda: len(copies) >= 3), f"sent {len(copies)} times"
        assert len(set(copies)) == 1 and len(session.outbox) == 1
        # The watcher can see a copy before the sending thread has counted it: wait for the count.
        assert wait_until(lambda: session.stats().resent >= 2), f"resent {session.stats().resent}"
        ack = StoredAck({METRICS_STREAM: StreamAck(metrics.epoch, ((0, BATCH),))})
        watcher.publish(f"edgebus/{DEVICE}/cmd/stored", ack.encode(), retain=True)
        assert wait_until(lambda: len(session.outbox) == 0), "the acknowledgement did not release it"
        assert session.stats().confirmed == 1
    finally:
        session.stop(flush_timeout=0)
        watcher.stop()
        mq.stop()


def test_another_device_cannot_forge_the_ack(tmp_path: Path) -> None:
    """The generated ACL: the acknowledgement lane of a device is written by coordinators, not by
    other devices; a forged one never reaches the device (Mosquitto refuses it at PUBACK)."""
    device, other = Credentials(DEVICE, generate_password()), Credentials("other-gw", generate_password())
    admin = Credentials("coordinator", generate_password())
    site = MosquittoSite(listener_host="127.0.0.1", port=free_port(), data_dir=tmp_path / "mq-data",
                         devices=[device, other], coordinators=[admin])
    mq = MosquittoUnderTest(tmp_path / "mq", site=site)
    mq.start()
    victim = BusSession(BusConfig(host=mq.host, port=mq.port, username=device.username,
                                  password=device.password, device=DEVICE, clean_start=True,
                                  end_to_end_ack="required"))
    forger = BusSession(BusConfig(host=mq.host, port=mq.port, username=other.username,
                                  password=other.password, device=other.username, clean_start=True,
                                  end_to_end_ack="off"))
    metrics = MetricsPublisher(victim)
    victim.start()
    forger.start()
    try:
        assert victim.wait_subscribed(WAIT) and forger.wait_connected(WAIT)
        Publisher(metrics).publish_one()
        assert wait_until(lambda: victim.stats().acknowledged >= 1)
        forged = StoredAck({METRICS_STREAM: StreamAck(metrics.epoch, ((0, BATCH),))})
        assert forger.publish(f"edgebus/{DEVICE}/cmd/stored", forged.encode(), retain=True)
        assert forger.flush(WAIT)
        assert forger.stats().rejected_by_broker == 1, "the broker took a forged acknowledgement"
        assert victim.stats().stored_acks == 0 and len(victim.outbox) == 1
    finally:
        victim.stop(flush_timeout=0)
        forger.stop(flush_timeout=0)
        mq.stop()


def test_coordinator_confirms_through_the_embedded_broker(embedded_broker: RunningBroker,
                                                          tmp_path: Path) -> None:
    """The acknowledgement also flows through the embedded (amqtt, MQTT 3.1.1) broker (the tests
    above run Mosquitto)."""
    broker = embedded_broker
    parts = start_coordinator(broker, tmp_path / "coordinator", client_id="coordinator-both")
    session = BusSession(config_for(broker, client_id=None, device=DEVICE, end_to_end_ack="required"))
    publisher = Publisher(MetricsPublisher(session))
    session.start()
    try:
        assert session.wait_subscribed(WAIT)
        for _ in range(3):
            publisher.publish_one()
        assert session.flush(WAIT), f"{len(session.outbox)} batches never confirmed"
        assert session.stats().confirmed == 3
        assert parts[3].count_samples(DEVICE) == publisher.accepted
    finally:
        session.stop(flush_timeout=0)
        stop_coordinator(parts)
