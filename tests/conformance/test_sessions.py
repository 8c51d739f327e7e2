"""Persistent sessions (MQTT 3.1.1 §3.1.2.4, §4.4): how "nothing accepted is lost" holds.

A device reconnects after every network drop; what the broker had accepted
for it but not seen acknowledged must reach it on the new connection.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.brokers import RunningBroker
from tests.conformance.raw_client import PUBCOMP, PUBREL, RawClient, offline_subscriber

pytestmark = pytest.mark.integration

RUNS = 10

AMQTT_NO_REDELIVERY = ("amqtt 0.12.1 does not resend unacknowledged QoS 1/2 messages to a "
                       "persistent session on reconnect")
AMQTT_NO_RESTART = ("amqtt 0.12.1 keeps sessions in memory unless its SessionDBPlugin (SQLAlchemy, "
                    "aiosqlite) is installed and configured")
AMQTT_NO_PUBREL = ("amqtt 0.12.1 does not resend PUBREL for a QoS 2 delivery left without PUBCOMP "
                   "when a persistent session reconnects")
AMQTT_TAKEOVER = ("amqtt 0.12.1 keeps the session on take-over but delivers nothing live to the "
                  "new connection")
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


@pytest.mark.broker_fails(embedded=AMQTT_NO_REDELIVERY, iotcore=IOTCORE_NO_DUP)
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


@pytest.mark.broker_fails(embedded=AMQTT_NO_PUBREL, iotcore=IOTCORE_NO_PUBREL)
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


@pytest.mark.broker_fails(embedded=AMQTT_TAKEOVER)
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


@pytest.mark.broker_fails(embedded=AMQTT_NO_REDELIVERY, iotcore=IOTCORE_NO_DUP)
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


@pytest.mark.broker_fails(embedded=AMQTT_NO_RESTART, iotcore=IOTCORE_NO_RESTART,
                           amqtt_db=None)
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


@pytest.mark.broker_fails(embedded=AMQTT_NO_RESTART, iotcore=IOTCORE_NO_RESTART,
                           amqtt_db=None)
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
