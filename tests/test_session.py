"""The bus session against real brokers: presence, resubscription, nothing lost."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from broker.router import ReceivedMessage
from broker.session import BusSession
from broker.telemetry import MetricsPublisher, birth_payload
from schemas.messages import Birth, MetricSample, decode_record
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, config_for, observer, tracked, wait_until
from tests.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def device_session(broker: RunningBroker, device: str, **overrides: object) -> BusSession:
    bus = BusSession(config_for(broker, device=device, client_id=f"edgebus-{device}", **overrides))
    pub = MetricsPublisher(bus)
    bus.set_birth(birth_payload(device, pub.epoch, agent_version="test"))
    return bus


def test_round_trip_and_protocol_choice(broker: RunningBroker) -> None:
    obs, inbox = observer(broker, "edgebus/dev-1/state/#")
    pub = BusSession(config_for(broker, client_id="pub"))
    pub.start()
    try:
        assert pub.wait_connected(WAIT)
        assert pub.publish("edgebus/dev-1/state/mode", b"day", content_type="text/plain")
        assert inbox.wait_for(lambda ms: len(ms) == 1)
        msg = inbox.messages[0]
        assert (msg.topic, msg.payload, msg.qos) == ("edgebus/dev-1/state/mode", b"day", 1)
        assert pub.flush(WAIT)
        stats = pub.stats()
        assert stats.acknowledged == 1 and stats.outbox_depth == 0
        expected = "5" if broker.speaks_mqtt5 else "3.1.1"
        assert stats.protocol == expected
        if broker.speaks_mqtt5:
            assert msg.content_type == "text/plain"
    finally:
        pub.stop()
        obs.stop()


def test_device_presence_birth_and_clean_offline(broker: RunningBroker) -> None:
    obs, inbox = observer(broker, "edgebus/cam-1/#")
    dev = device_session(broker, "cam-1")
    try:
        dev.start()
        assert inbox.wait_for(lambda ms: any(m.topic == "edgebus/cam-1/birth" for m in ms))
        assert inbox.payloads("edgebus/cam-1/status")[-1] == b"online"
        birth = decode_record(inbox.payloads("edgebus/cam-1/birth")[-1])
        assert isinstance(birth, Birth) and birth.device == "cam-1"
    finally:
        dev.stop()
    assert inbox.wait_for(lambda ms: inbox.payloads("edgebus/cam-1/status")[-1:] == [b"offline"])
    obs.stop()


DEVICE_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from broker.session import BusConfig, BusSession
    bus = BusSession(BusConfig(host={host!r}, port={port}, username={user!r}, password={pw!r},
                               device="victim", clean_start=True))
    bus.start()
    bus.wait_connected(30)
    print("connected", flush=True)
    time.sleep(120)
""")


def test_kill_9_leaves_offline_by_will(broker: RunningBroker) -> None:
    obs, inbox = observer(broker, "edgebus/victim/status")
    script = DEVICE_SCRIPT.format(repo=str(REPO), host=broker.host, port=broker.port,
                                  user=broker.username, pw=broker.password)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "connected"
        assert inbox.wait_for(lambda ms: inbox.payloads("edgebus/victim/status")[-1:] == [b"online"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)
        assert inbox.wait_for(
            lambda ms: inbox.payloads("edgebus/victim/status")[-1:] == [b"offline"])
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)
        obs.stop()


def _publish_range(pub: MetricsPublisher, start: int, stop: int) -> None:
    for i in range(start, stop):
        assert pub.publish([MetricSample(time_ms=1_700_000_000_000 + i, name="n", value=i)])


def test_outbox_survives_network_cut(broker: RunningBroker, tmp_path: Path) -> None:
    """Publish through a cut link: every sample arrives once, in order, after it heals."""
    obs, inbox = observer(broker, "edgebus/gw-1/metrics")
    proxy = CuttableProxy(broker.host, broker.port)
    dev = BusSession(config_for(broker, port=proxy.port, device="gw-1", client_id="gw-1",
                                outbox_path=tmp_path / "outbox.db"))
    pub = MetricsPublisher(dev)
    try:
        dev.start()
        assert dev.wait_connected(WAIT)
        _publish_range(pub, 0, 50)
        assert dev.flush(WAIT)
        proxy.cut()
        assert wait_until(lambda: not dev.is_connected)
        _publish_range(pub, 50, 150)
        assert len(dev.outbox) == 100
        proxy.restore()
        assert dev.flush(WAIT), f"outbox still holds {len(dev.outbox)}"
        assert inbox.wait_for(lambda ms: len(ms) >= 150)
        time.sleep(0.2)  # let any stray duplicate arrive before counting
        tracker, deliveries = tracked(inbox)
        seq = tracker.device("gw-1")
        assert (seq.received, seq.missing, seq.duplicates) == (150, 0, 0)
        assert set(deliveries.values()) == {1}
        order = [decode_record(m.payload).first_seq for m in inbox.messages]  # type: ignore[union-attr]
        assert order == sorted(order)
        assert dev.stats().connection_losses >= 1
    finally:
        dev.stop()
        proxy.close()
        obs.stop()


def test_outbox_survives_broker_restart_and_process_restart(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """Publish while the broker is down; restart the broker and the publisher: none lost."""
    outbox = tmp_path / "outbox.db"
    dev = BusSession(config_for(broker, device="gw-2", client_id="gw-2", outbox_path=outbox))
    pub = MetricsPublisher(dev)
    obs, inbox = observer(broker, "edgebus/gw-2/metrics")
    try:
        dev.start()
        assert dev.wait_connected(WAIT)
        _publish_range(pub, 0, 20)
        assert dev.flush(WAIT)
        assert inbox.wait_for(lambda ms: len(ms) == 20)
        broker.stop()
        assert wait_until(lambda: not dev.is_connected)
        _publish_range(pub, 20, 120)  # accepted while the broker is unreachable
        assert dev.stats().accepted == 120
    finally:
        dev.stop(flush_timeout=0)  # the process "exits" with 100 messages on disk
    broker.start()
    assert wait_until(obs.wait_connected)
    time.sleep(0.3)  # the observer's resubscription is on the wire
    again = BusSession(config_for(broker, device="gw-2", client_id="gw-2", outbox_path=outbox))
    try:
        assert len(again.outbox) == 100
        again.start()
        assert again.flush(WAIT)
        assert inbox.wait_for(lambda ms: len(ms) >= 120)
        time.sleep(0.2)
        tracker, deliveries = tracked(inbox)
        seq = tracker.device("gw-2")
        assert (seq.received, seq.missing, seq.duplicates) == (120, 0, 0)
        assert set(deliveries.values()) == {1}
        # a new publisher on the same outbox continues the sequence, same epoch
        assert MetricsPublisher(again).epoch == pub.epoch
    finally:
        again.stop()
        obs.stop()


def test_resubscribes_after_broker_restart_without_persistence(broker: RunningBroker) -> None:
    obs, inbox = observer(broker, "edgebus/x/state/#")
    try:
        broker.stop()
        assert wait_until(lambda: not obs.is_connected)
        broker.start()
        assert obs.wait_connected(WAIT)
        pub = BusSession(config_for(broker, client_id="late-pub"))
        pub.start()
        try:
            assert pub.wait_connected(WAIT)
            time.sleep(0.2)
            pub.publish("edgebus/x/state/a", b"1")
            assert inbox.wait_for(lambda ms: len(ms) >= 1)
        finally:
            pub.stop()
    finally:
        obs.stop()


def test_wrong_password_is_reported_not_fatal(broker: RunningBroker) -> None:
    bus = BusSession(config_for(broker, password="wrong", client_id="intruder"))
    bus.start()
    try:
        assert bus.publish("edgebus/x/state/a", b"kept")  # accepted into the outbox anyway
        assert wait_until(lambda: bus.stats().last_error != "")
        error = bus.stats().last_error
        assert "refused" in error or "CONNACK" in error, error
        assert not bus.is_connected
        assert bus.stats().outbox_depth == 1
    finally:
        bus.stop(flush_timeout=0)


def test_subscription_handler_queue_pattern(broker: RunningBroker) -> None:
    """Handlers run on the network thread; the documented hand-off to a queue works."""
    q: queue.Queue[ReceivedMessage] = queue.Queue()
    bus = BusSession(config_for(broker, client_id="q-sub"))
    bus.subscribe("edgebus/+/metrics", q.put)
    bus.start()
    dev = device_session(broker, "gw-3")
    try:
        assert bus.wait_connected(WAIT)
        time.sleep(0.2)
        dev.start()
        pub = MetricsPublisher(dev)
        _publish_range(pub, 0, 5)
        got = [q.get(timeout=WAIT) for _ in range(5)]
        assert [decode_record(m.payload).first_seq for m in got] == list(range(5))  # type: ignore[union-attr]
    finally:
        dev.stop()
        bus.stop()
