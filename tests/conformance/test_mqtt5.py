"""MQTT 5 and shared subscriptions, which edgebus uses where the broker offers them.

A broker that does not speak MQTT 5 should refuse its CONNECT (MQTT 3.1.1
§3.1.2.2: CONNACK 0x01, unacceptable protocol level) rather than leave the
client waiting.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conformance.raw_client import RawClient

pytestmark = pytest.mark.integration

# The embedded broker cannot do these; they need Mosquitto (edge-broker run --mosquitto).
AMQTT_NO_MQTT5 = ("amqtt 0.12.1 speaks MQTT 3.1.1 only and leaves an MQTT 5 CONNECT unanswered; "
                  "MQTT 5 needs Mosquitto (edge-broker run --mosquitto)")
AMQTT_NO_SHARE = ("amqtt 0.12.1 grants $share subscriptions and never delivers to them; shared "
                  "subscriptions need Mosquitto (edge-broker run --mosquitto)")


@pytest.mark.broker_fails(embedded=AMQTT_NO_MQTT5)
def test_mqtt5_connect_is_accepted(client: Callable[..., RawClient]) -> None:
    device = client("device", mqtt5=True)
    _present, reason = device.connect(timeout=3.0)
    assert reason == 0, f"MQTT 5 CONNACK reason code {reason:#x}"


@pytest.mark.broker_fails(embedded=AMQTT_NO_MQTT5)
def test_mqtt5_publish_and_subscribe(client: Callable[..., RawClient], topic_root: str) -> None:
    sub = client("sub", mqtt5=True)
    sub.connect(timeout=3.0)
    assert sub.subscribe((f"{topic_root}/t", 1)) == [1]
    pub = client("pub", mqtt5=True)
    pub.connect(timeout=3.0)
    pub.publish(f"{topic_root}/t", b"v5", qos=1)
    message = sub.expect_publish(3.0)
    assert (message.payload, message.qos) == (b"v5", 1)


@pytest.mark.broker_fails(embedded=AMQTT_NO_SHARE)
def test_shared_subscription_delivers_each_message_once(
        client: Callable[..., RawClient], topic_root: str) -> None:
    """`$share/group/filter` (MQTT 5 §4.8.2; Mosquitto also for 3.1.1 clients)."""
    members = []
    for name in ("worker-a", "worker-b"):
        member = client(name)
        member.connected()
        member.subscribe((f"$share/workers/{topic_root}/jobs", 1), (f"{topic_root}/marker", 1))
        members.append(member)
    pub = client("pub")
    pub.connected()
    for n in range(10):
        pub.publish(f"{topic_root}/jobs", b"%d" % n, qos=1)
    pub.publish(f"{topic_root}/marker", b"", qos=1)
    got = sorted(int(m.payload) for member in members
                 for m in member.publishes_until(f"{topic_root}/marker")
                 if m.topic == f"{topic_root}/jobs")
    assert got == list(range(10)), f"each job once across the group, got {got}"
