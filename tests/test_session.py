"""The bus session against real brokers: presence, resubscription, nothing lost."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from broker.credentials import Credentials
from broker.embedded import EmbeddedBroker
from broker.router import ReceivedMessage, Route
from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher, birth_payload
from schemas.errors import SubscriptionRefused
from schemas.messages import Birth, MetricSample, decode_record
from tests.brokers import MosquittoUnderTest, RunningBroker
from tests.bus_helpers import WAIT, Inbox, config_for, observer, tracked, wait_until
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
    assert inbox.wait_last("edgebus/cam-1/status", b"offline")
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
        assert inbox.wait_last("edgebus/victim/status", b"online")
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
    assert obs.wait_subscribed(WAIT)  # resubscribed on the restarted broker
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
        assert obs.wait_subscribed(WAIT)
        pub = BusSession(config_for(broker, client_id="late-pub"))
        pub.start()
        try:
            assert pub.wait_connected(WAIT)
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
    route = bus.subscribe("edgebus/+/metrics", q.put)
    bus.start()
    dev = device_session(broker, "gw-3")
    try:
        assert route.wait_subscribed(WAIT)
        dev.start()
        pub = MetricsPublisher(dev)
        _publish_range(pub, 0, 5)
        got = [q.get(timeout=WAIT) for _ in range(5)]
        assert [decode_record(m.payload).first_seq for m in got] == list(range(5))  # type: ignore[union-attr]
    finally:
        dev.stop()
        bus.stop()


def test_a_route_added_while_a_connection_is_set_up_is_subscribed_on_it(
        mosquitto_broker: MosquittoUnderTest) -> None:
    """The race: a route added after the new connection took its snapshot of the routes,
    but before it was published as live, used to be subscribed on no connection at all.

    The birth callable runs in exactly that gap; it has another thread subscribe
    and waits for it. The retained message shows the subscription reached the broker.
    """
    with BusSession(config_for(mosquitto_broker, client_id="retainer")) as pub:
        assert pub.publish("edgebus/race/state/mode", b"day", retain=True)
        assert pub.flush(WAIT)
    dev = BusSession(config_for(mosquitto_broker, device="race-1", client_id="race-1"))
    inbox = Inbox()
    routes: list[Route] = []
    birth = birth_payload("race-1", 1, agent_version="test")

    def birth_that_subscribes_meanwhile() -> bytes:
        if not routes:
            other = threading.Thread(
                target=lambda: routes.append(dev.subscribe("edgebus/race/state/#", inbox)))
            other.start()
            other.join(WAIT)
        return birth()

    dev.set_birth(birth_that_subscribes_meanwhile)
    dev.start()
    try:
        assert inbox.wait_for(lambda ms: [m.payload for m in ms] == [b"day"]), \
            "the route added during connection set-up was never subscribed"
        assert routes[0].wait_subscribed(WAIT)
    finally:
        dev.stop()


def test_wait_subscribed_follows_the_connection(broker: RunningBroker) -> None:
    """A SUBACK counts for the connection it came on: pending while cut, again after."""
    proxy = CuttableProxy(broker.host, broker.port)
    bus = BusSession(config_for(broker, port=proxy.port, client_id="suback-watch",
                                protocol="auto" if broker.speaks_mqtt5 else "3.1.1"))
    inbox = Inbox()
    first = bus.subscribe("edgebus/sub/state/a", inbox)
    assert not first.wait_subscribed(0)  # not started: nothing acknowledged
    pub = BusSession(config_for(broker, client_id="suback-pub"))
    try:
        bus.start()
        pub.start()
        assert first.wait_subscribed(WAIT) and bus.wait_subscribed(WAIT)
        proxy.cut()
        assert wait_until(lambda: not bus.is_connected)
        assert not first.wait_subscribed(0)
        second = bus.subscribe("edgebus/sub/state/b", inbox)  # added while disconnected
        assert not second.wait_subscribed(0)
        proxy.restore()
        assert bus.wait_subscribed(WAIT)
        assert first.wait_subscribed(0) and second.wait_subscribed(0)
        pub.publish("edgebus/sub/state/a", b"1")
        pub.publish("edgebus/sub/state/b", b"2")
        assert inbox.wait_for(lambda ms: sorted(m.payload for m in ms) == [b"1", b"2"])
        bus.unsubscribe(second)
        assert not second.wait_subscribed(0)
    finally:
        pub.stop()
        bus.stop()
        proxy.close()


def test_a_refused_subscription_is_an_edgebus_error(tmp_path: Path) -> None:
    """A SUBACK failure code (0x80 here, from the embedded broker's ACL) raises; the session lives on.

    (Mosquitto 2.0 grants every SUBSCRIBE and applies its ACL on delivery instead.)
    """
    user = Credentials("cam-1", "pw-cam-1")
    acl = {"cam-1": {"publish": ["edgebus/cam-1/#"], "subscribe": ["edgebus/cam-1/#"]}}
    with EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[user], acl=acl) as embedded:
        bus = BusSession(BusConfig(port=embedded.port, username=user.username,
                                   password=user.password, client_id="refused", clean_start=True,
                                   protocol="3.1.1", reconnect_min_delay=0.05))
        inbox = Inbox()
        allowed = bus.subscribe("edgebus/cam-1/state/#", inbox)
        with bus:
            refused = bus.subscribe("edgebus/cam-2/cmd/#", inbox)
            with pytest.raises(SubscriptionRefused, match="edgebus/cam-2/cmd/#"):
                refused.wait_subscribed(WAIT)
            with pytest.raises(SubscriptionRefused):
                bus.wait_subscribed(WAIT)
            assert allowed.wait_subscribed(WAIT)
            assert bus.publish("edgebus/cam-1/state/x", b"still works")
            assert inbox.wait_for(lambda ms: [m.payload for m in ms] == [b"still works"])
