"""Persistent sessions (MQTT 3.1.1 §3.1.2.4, §4.4): how "nothing accepted is lost" holds.

A device reconnects after every network drop; what the broker had accepted
for it but not seen acknowledged must reach it on the new connection.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.brokers import RunningBroker
from tests.conformance.raw_client import (
    PUBCOMP,
    PUBREL,
    ConnectionClosed,
    RawClient,
    Will,
    offline_subscriber,
)

pytestmark = pytest.mark.integration

RUNS = 10

# What unpatched amqtt 0.12.1 (candidate amqtt_db) gets wrong; the embedded broker's
# fixes (broker/amqtt_fixes) and store (broker/amqtt_session_store.py) mend it.
AMQTT_NO_REDELIVERY = ("amqtt 0.12.1 does not resend unacknowledged QoS 1/2 messages to a "
                       "persistent session on reconnect")
AMQTT_NO_PUBREL = ("amqtt 0.12.1 does not resend PUBREL for a QoS 2 delivery left without PUBCOMP "
                   "when a persistent session reconnects")
AMQTT_TAKEOVER = ("amqtt 0.12.1 keeps the session on take-over but delivers nothing live to the "
                  "new connection")
AMQTT_TAKEOVER_WILL = "amqtt 0.12.1 publishes the replaced connection's will on take-over"
AMQTT_CLEAN_TAKEOVER = ("amqtt 0.12.1 leaves the old connection open when a new one with its "
                        "client id asks for a clean session")
AMQTT_REFUSED_TAKEOVER = (
    "amqtt 0.12.1 registers a connection that fails to log in in the place of the connected "
    "client with that id (before it checks the password), so the client loses its deliveries")
IOTCORE_NO_DUP = "rumqttd 0.20 resends an unacknowledged message with its id but DUP 0"
IOTCORE_NO_PUBREL = "rumqttd 0.20 does not resend PUBREL to a reconnecting persistent session"
IOTCORE_NO_RESTART = "rumqttd 0.20 has no persistence: sessions live in memory"


def _in_flight(client: Callable[..., RawClient], topic: str, qos: int) -> tuple[RawClient, int]:
    """A persistent subscriber holding one unacknowledged delivery: (subscriber, its packet id)."""
    sub = client("sub", auto_ack=False)
    sub.connected(clean_session=False)
    assert sub.subscribe((topic, qos)) == [qos]
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"unacked", qos=qos)
    first = sub.expect_publish()
    assert (first.payload, first.qos, first.dup) == (b"unacked", qos, False)
    assert first.packet_id is not None
    return sub, first.packet_id


@pytest.mark.broker_fails(amqtt_db=AMQTT_NO_REDELIVERY, iotcore=IOTCORE_NO_DUP)
@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_message_redelivered_with_dup(client: Callable[..., RawClient],
                                                     topic_root: str, qos: int) -> None:
    """§4.4: on reconnect with CleanSession 0 the server resends with the original id, DUP 1."""
    sub, packet_id = _in_flight(client, f"{topic_root}/t", qos)
    sub.drop()
    assert sub.connected(clean_session=False), "session present must be 1"
    again = sub.next_publish(3.0)
    assert again is not None, f"unacknowledged QoS {qos} message not resent on reconnect"
    assert (again.payload, again.qos, again.packet_id) == (b"unacked", qos, packet_id)
    assert again.dup, "a resent PUBLISH must have DUP set (§3.3.1.1)"


@pytest.mark.broker_fails(amqtt_db=AMQTT_NO_PUBREL, iotcore=IOTCORE_NO_PUBREL)
def test_unacknowledged_pubrel_resent(client: Callable[..., RawClient], topic_root: str) -> None:
    """§4.4: a QoS 2 delivery stopped after PUBREC is finished with a resent PUBREL."""
    topic = f"{topic_root}/t"
    sub = client("sub", auto_ack=False)
    sub.connected(clean_session=False)
    sub.subscribe((topic, 2))
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"exactly-once", qos=2)
    message = sub.expect_publish()
    sub.ack(message)  # PUBREC
    sub.expect(PUBREL, packet_id=message.packet_id)
    sub.drop()  # no PUBCOMP
    assert sub.connected(clean_session=False)
    resent = sub.wait_for(lambda p: p.kind != PUBCOMP, 3.0)
    assert resent is not None and resent.kind == PUBREL, f"expected PUBREL, got {resent}"
    assert resent.packet_id == message.packet_id


def test_offline_messages_queued_for_persistent_session(client: Callable[..., RawClient],
                                                        topic_root: str) -> None:
    topic = f"{topic_root}/t"
    sub = offline_subscriber(client, topic)
    pub = client("pub")
    pub.connected()
    for n in range(3):
        pub.publish(topic, b"%d" % n, qos=1)
    assert sub.connected(clean_session=False), "session present must be 1"
    got = [sub.expect_publish(3.0).payload for _ in range(3)]
    assert got == [b"0", b"1", b"2"]


@pytest.mark.broker_fails(amqtt_db=AMQTT_TAKEOVER)
def test_takeover_keeps_session_and_delivers_live(client: Callable[..., RawClient],
                                                  topic_root: str) -> None:
    """§3.1.4: a second CONNECT with the same id closes the first connection, session kept.

    This is every reconnect after a network drop the old socket did not notice.
    """
    pub = client("pub")
    pub.connected()
    for run in range(RUNS):
        topic = f"{topic_root}/{run}"
        old = client(f"device-{run}")
        old.connected(clean_session=False)
        old.subscribe((topic, 1))
        new = client(f"device-{run}")  # the same client id
        assert new.connected(clean_session=False), f"run {run}: session lost on take-over"
        assert old.wait_closed(3.0), f"run {run}: the old connection was not closed"
        pub.publish(topic, b"live-%d" % run, qos=1)
        message = new.next_publish(2.0)
        assert message is not None, f"run {run}: no live delivery after take-over"
        assert message.payload == b"live-%d" % run
        new.disconnect()


@pytest.mark.broker_fails(amqtt_db=AMQTT_NO_REDELIVERY, iotcore=IOTCORE_NO_DUP)
def test_takeover_redelivers_in_flight_message(client: Callable[..., RawClient],
                                               topic_root: str) -> None:
    pub = client("pub")
    pub.connected()
    for run in range(RUNS):
        topic = f"{topic_root}/{run}"
        old = client(f"device-{run}", auto_ack=False)
        old.connected(clean_session=False)
        old.subscribe((topic, 1))
        pub.publish(topic, b"in-flight-%d" % run, qos=1)
        assert old.expect_publish().payload == b"in-flight-%d" % run
        new = client(f"device-{run}")
        assert new.connected(clean_session=False), f"run {run}: session lost on take-over"
        message = new.next_publish(2.0)
        assert message is not None, f"run {run}: in-flight message lost on take-over"
        assert (message.payload, message.dup) == (b"in-flight-%d" % run, True)
        new.disconnect()


@pytest.mark.broker_fails(amqtt_db=AMQTT_TAKEOVER_WILL)
def test_takeover_does_not_publish_the_will(client: Callable[..., RawClient],
                                            topic_root: str) -> None:
    """A take-over is the device coming back, not going away: no will (as Mosquitto 2.0 does).

    edgebus's will is ``offline`` on the retained status topic; published
    after the new connection's ``online`` it would mark a connected device offline.
    """
    watcher = client("watcher")
    watcher.connected()
    watcher.subscribe((f"{topic_root}/+/status", 1))
    for run in range(RUNS):
        status = f"{topic_root}/{run}/status"
        will = Will(status, b"offline", qos=1, retain=True)
        old = client(f"device-{run}")
        old.connected(clean_session=False, will=will)
        old.publish(status, b"online", qos=1, retain=True)
        new = client(f"device-{run}")
        assert new.connected(clean_session=False, will=will), f"run {run}: session lost"
        new.publish(status, b"back", qos=1, retain=True)
        new.disconnect()
    marker = client("marker")
    marker.connected()
    marker.publish(f"{topic_root}/end/status", b"", qos=1)
    got = watcher.publishes_until(f"{topic_root}/end/status")
    for run in range(RUNS):
        seen = [m.payload for m in got if m.topic == f"{topic_root}/{run}/status"]
        assert seen == [b"online", b"back"], f"run {run}: status went {seen}"


@pytest.mark.broker_fails(amqtt_db=AMQTT_CLEAN_TAKEOVER)
def test_clean_session_takeover_closes_the_old_connection(client: Callable[..., RawClient],
                                                         topic_root: str) -> None:
    """§3.1.4 [MQTT-3.1.4-2]: the existing client is disconnected whatever the new CleanSession.

    The old session ends with it; a broker may then publish its will
    (Mosquitto 2.0 does), but before the new connection's first message, or
    presence would read ``offline`` for a connected device.
    """
    status = f"{topic_root}/status"
    watcher = client("watcher")
    watcher.connected()
    watcher.subscribe((f"{topic_root}/#", 1))
    old = client("device")
    old.connected(clean_session=False, will=Will(status, b"offline", qos=1))
    new = client("device")
    assert not new.connected(clean_session=True), "a clean session has no session present"
    assert old.wait_closed(3.0), "the old connection was not closed"
    new.publish(status, b"back", qos=1)
    new.publish(f"{topic_root}/marker", b"", qos=1)
    seen = [m.payload for m in watcher.publishes_until(f"{topic_root}/marker") if m.topic == status]
    assert seen in ([b"back"], [b"offline", b"back"]), f"status went {seen}"


@pytest.mark.broker_fails(amqtt_db=AMQTT_REFUSED_TAKEOVER)
def test_refused_connect_leaves_the_connected_client_alone(client: Callable[..., RawClient],
                                                           topic_root: str) -> None:
    """A CONNECT with the right client id and a wrong password must not take anything over."""
    topic = f"{topic_root}/t"
    device = client("device")
    device.connected(clean_session=False)
    device.subscribe((topic, 1))
    intruder = client("device")
    intruder.password = "not-the-password"
    _present, code = intruder.connect(clean_session=False)
    assert code in (4, 5), f"CONNACK return code {code} for a wrong password"
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"still-mine", qos=1)
    try:
        message = device.next_publish(3.0)
    except ConnectionClosed:
        pytest.fail("the connected client was disconnected by a refused CONNECT")
    assert message is not None and message.payload == b"still-mine", "delivery lost"


@pytest.mark.broker_fails(iotcore=IOTCORE_NO_RESTART)
def test_persistent_session_survives_broker_restart(client: Callable[..., RawClient],
                                                    conformance_broker: RunningBroker,
                                                    topic_root: str) -> None:
    topic = f"{topic_root}/t"
    sub = offline_subscriber(client, topic)
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"queued", qos=1)
    pub.disconnect()

    conformance_broker.stop()
    conformance_broker.start()

    assert sub.connected(clean_session=False), "session lost in the restart"
    queued = sub.next_publish(3.0)
    assert queued is not None and queued.payload == b"queued", "queued message lost"
    pub.connected()
    pub.publish(topic, b"live", qos=1)
    live = sub.next_publish(3.0)
    assert live is not None and live.payload == b"live", "subscription lost in the restart"


@pytest.mark.broker_fails(iotcore=IOTCORE_NO_RESTART)
def test_retained_message_survives_broker_restart(client: Callable[..., RawClient],
                                                  conformance_broker: RunningBroker,
                                                  topic_root: str) -> None:
    topic = f"{topic_root}/state"
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"on", qos=1, retain=True)
    pub.disconnect()
    conformance_broker.stop()
    conformance_broker.start()
    sub = client("sub")
    sub.connected()
    sub.subscribe((topic, 1))
    message = sub.next_publish(3.0)
    assert message is not None and (message.payload, message.retain) == (b"on", True)
