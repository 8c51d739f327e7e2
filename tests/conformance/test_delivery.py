"""What a subscriber receives and with which flags (MQTT 3.1.1 §3.3.1, §3.3.5, §4.7, §3.10).

edgebus treats a message with RETAIN set as state (the last value of a
topic) and one without as an event, so the flag must mean what §3.3.1.3
says; and it sizes acknowledgements by the QoS a message arrives with.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import pytest

from tests.conformance.conftest import DOLLAR_ROOT
from tests.conformance.raw_client import (
    DISCONNECT,
    PUBACK,
    PUBLISH,
    ConnectionClosed,
    RawClient,
    encode_packet,
    offline_subscriber,
)

pytestmark = pytest.mark.integration

# What unpatched amqtt 0.12.1 (candidate amqtt_db) gets wrong; broker/amqtt_fixes mends it.
AMQTT_QOS = ("amqtt 0.12.1 delivers at the subscription's QoS, not min(publish QoS, "
             "subscription QoS): a QoS 0 publish arrives as QoS 2")
AMQTT_QUEUED_RETAIN = "amqtt 0.12.1 flags messages queued for an offline session as retained"
AMQTT_RETAIN_LEAK = ("amqtt 0.12.1 sends a connecting client the retained messages that match "
                     "other clients' subscriptions")
IOTCORE_QOS = ("rumqttd 0.20 delivers at the subscription's QoS: a QoS 0 or 1 publish to a "
               "QoS 2 subscriber arrives as QoS 2")


@pytest.mark.broker_fails(amqtt_db=AMQTT_QOS, iotcore=IOTCORE_QOS)
def test_delivery_qos_is_the_lower_of_publish_and_subscription(
        client: Callable[..., RawClient], topic_root: str) -> None:
    """§3.8.4: the broker downgrades to min(QoS of the PUBLISH, QoS granted)."""
    topic = f"{topic_root}/t"
    subscribers = []
    for sub_qos in (0, 1, 2):
        sub = client(f"sub{sub_qos}")
        sub.connected()
        assert sub.subscribe((topic, sub_qos)) == [sub_qos]
        subscribers.append((sub_qos, sub))
    pub = client("pub")
    pub.connected()
    for pub_qos in (0, 1, 2):
        pub.publish(topic, b"%d" % pub_qos, qos=pub_qos)
    wrong = []
    for sub_qos, sub in subscribers:
        for _ in range(3):
            message = sub.expect_publish(3.0)
            pub_qos = int(message.payload)
            if message.qos != min(pub_qos, sub_qos):
                wrong.append(f"publish QoS {pub_qos} to subscription QoS {sub_qos} arrived "
                             f"as QoS {message.qos}")
    assert not wrong, "; ".join(wrong)


def test_retained_message_sent_on_new_subscription_has_retain_1(
        client: Callable[..., RawClient], topic_root: str) -> None:
    """§3.3.1.3: a retained message sent because of a new subscription has RETAIN 1."""
    topic = f"{topic_root}/state"
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"on", qos=1, retain=True)
    sub = client("sub")
    sub.connected()
    sub.subscribe((topic, 1))
    message = sub.expect_publish(3.0)
    assert (message.topic, message.payload, message.retain) == (topic, b"on", True)
    pub.publish(f"{topic_root}/marker", b"", qos=1)
    sub.subscribe((f"{topic_root}/marker", 1))
    pub.publish(f"{topic_root}/marker", b"", qos=1)
    rest = sub.publishes_until(f"{topic_root}/marker")
    assert [m.topic for m in rest] == [f"{topic_root}/marker"], f"extra copies: {rest}"


def test_live_message_published_retained_has_retain_0(
        client: Callable[..., RawClient], topic_root: str) -> None:
    """§3.3.1.3 [MQTT-3.3.1-9]: to an established subscription RETAIN is 0, however published."""
    topic = f"{topic_root}/state"
    sub = client("sub")
    sub.connected()
    sub.subscribe((topic, 1))
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"on", qos=1, retain=True)
    message = sub.expect_publish(3.0)
    assert (message.payload, message.retain) == (b"on", False)


@pytest.mark.broker_fails(amqtt_db=AMQTT_QUEUED_RETAIN)
def test_queued_message_has_retain_0(client: Callable[..., RawClient], topic_root: str) -> None:
    """A message queued for an offline session matched an established subscription: RETAIN 0."""
    topic = f"{topic_root}/event"
    sub = offline_subscriber(client, topic)
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"while-away", qos=1)
    sub.connected(clean_session=False)
    message = sub.expect_publish(3.0)
    assert (message.payload, message.retain) == (b"while-away", False)


@pytest.mark.broker_fails(amqtt_db=AMQTT_RETAIN_LEAK)
def test_retained_messages_only_for_own_subscriptions(
        client: Callable[..., RawClient], topic_root: str) -> None:
    """§3.3.1.3: retained messages go to a *new subscription* that matches them, to nobody else."""
    other = client("other")
    other.connected()
    other.subscribe((f"{topic_root}/a", 1))
    pub = client("pub")
    pub.connected()
    pub.publish(f"{topic_root}/a", b"state-a", qos=1, retain=True)
    sub = client("sub")
    sub.connected()
    sub.subscribe((f"{topic_root}/b", 1))
    pub.publish(f"{topic_root}/b", b"marker", qos=1)
    got = sub.publishes_until(f"{topic_root}/b")
    assert [m.topic for m in got] == [f"{topic_root}/b"], f"not subscribed to: {got}"


@pytest.mark.broker_fails(amqtt_db=AMQTT_QOS, iotcore=IOTCORE_QOS)
def test_overlapping_subscriptions(client: Callable[..., RawClient], topic_root: str) -> None:
    """§3.3.5: with overlapping filters, one copy at least at the highest matching QoS."""
    topic = f"{topic_root}/room/temp"
    sub = client("sub")
    sub.connected()
    assert sub.subscribe((f"{topic_root}/#", 0), (f"{topic_root}/+/temp", 2)) == [0, 2]
    pub = client("pub")
    pub.connected()
    pub.publish(topic, b"21.5", qos=1)
    pub.publish(f"{topic_root}/marker", b"", qos=1)
    got = [m for m in sub.publishes_until(f"{topic_root}/marker") if m.topic == topic]
    assert got, "no copy delivered"
    assert 1 <= len(got) <= 2, f"{len(got)} copies for 2 matching subscriptions"
    assert all(m.payload == b"21.5" for m in got)
    assert max(m.qos for m in got) == 1, f"no copy at QoS min(1, max(0, 2)) = 1: {got}"


def test_dollar_topics_not_matched_by_leading_wildcards(
        client: Callable[..., RawClient], topic_root: str) -> None:
    """§4.7.2: `#` and `+/...` must not match topic names that start with `$`.

    A broker may keep clients off `$` topics altogether (§4.7.2: it SHOULD
    keep them from exchanging messages there): amqtt closes the connection
    of a client that publishes to one, rumqttd that of a client that
    subscribes to one. The case then holds trivially - no wildcard reaches a
    `$` topic - and the subscriber that names the topic shows which it was.
    """
    dollar_topic = f"{DOLLAR_ROOT}/probe"
    marker = f"{topic_root}/marker"
    wildcard = client("wildcard")
    wildcard.connected()
    wildcard.subscribe(("#", 1), ("+/probe", 1))
    insider: RawClient | None = client("insider")
    assert insider is not None
    insider.connected()
    try:
        insider.subscribe((f"{DOLLAR_ROOT}/#", 1), (marker, 1))
    except ConnectionClosed:
        insider = None
    dollar_pub = client("dollar-pub")
    dollar_pub.connected()
    with contextlib.suppress(ConnectionClosed):
        dollar_pub.publish(dollar_topic, b"dollar", qos=1)
    pub = client("pub")
    pub.connected()
    pub.publish(marker, b"", qos=1)
    if insider is not None:
        seen_by_insider = [m.topic for m in insider.publishes_until(marker)]
        assert seen_by_insider in ([dollar_topic, marker], [marker])
    got = wildcard.publishes_until(marker)
    leaked = [m.topic for m in got if m.topic.startswith("$")]
    assert not leaked, f"matched by a leading wildcard: {leaked}"


def test_unsubscribe_stops_delivery(client: Callable[..., RawClient], topic_root: str) -> None:
    """§3.10.4: after UNSUBACK no new message is delivered for the removed filter."""
    sub = client("sub")
    sub.connected()
    sub.subscribe((f"{topic_root}/t", 1), (f"{topic_root}/marker", 1))
    pub = client("pub")
    pub.connected()
    pub.publish(f"{topic_root}/t", b"before", qos=1)
    assert sub.expect_publish(3.0).payload == b"before"
    sub.unsubscribe(f"{topic_root}/t")
    pub.publish(f"{topic_root}/t", b"after", qos=1)
    pub.publish(f"{topic_root}/marker", b"", qos=1)
    got = sub.publishes_until(f"{topic_root}/marker")
    assert [m.topic for m in got] == [f"{topic_root}/marker"], f"after unsubscribe: {got}"


def test_unsubscribe_keeps_other_subscriptions(
        client: Callable[..., RawClient], topic_root: str) -> None:
    sub = client("sub")
    sub.connected()
    sub.subscribe((f"{topic_root}/a", 1), (f"{topic_root}/b", 1))
    sub.unsubscribe(f"{topic_root}/a")
    pub = client("pub")
    pub.connected()
    pub.publish(f"{topic_root}/b", b"still", qos=1)
    assert sub.expect_publish(3.0).payload == b"still"


def test_every_publish_before_a_disconnect_is_forwarded(
        client: Callable[..., RawClient], topic_root: str) -> None:
    """§4.6: a server processes a connection's packets in order, so every PUBLISH before the
    DISCONNECT is published; and a QoS 1 message it acknowledged is its to deliver (§4.3.2).

    A device that flushes its outbox and disconnects (a clean shutdown) does exactly this.
    """
    topic, count = f"{topic_root}/t", 500
    sub = client("sub")
    sub.connected()
    sub.subscribe((topic, 1))
    pub = client("pub", auto_ack=False)
    pub.connected()
    name = topic.encode()
    burst = b"".join(
        encode_packet(PUBLISH, 1 << 1, struct.pack("!H", len(name)) + name
                      + struct.pack("!H", n + 1) + b"%d" % n) for n in range(count))
    pub.send(burst + encode_packet(DISCONNECT, 0, b""))
    assert pub.wait_closed(10.0), "the broker did not close the connection after DISCONNECT"
    acknowledged = sum(1 for p in pub.inbox if p.kind == PUBACK)
    got = []
    while (message := sub.next_publish(2.0)) is not None:
        got.append(int(message.payload))
    assert sorted(got) == list(range(count)), (
        f"{count - len(set(got))} of {count} messages lost ({acknowledged} acknowledged)")
