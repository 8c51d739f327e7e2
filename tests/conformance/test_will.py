"""Wills (MQTT 3.1.1 §3.1.2.5, §3.1.2.10): how edgebus learns that a device is gone.

A device that loses power or network does not close its TCP connection; the
broker only notices because the keepalive runs out (§3.1.2.10: no packet
within one and a half times the keepalive), and must then publish the will.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.brokers import RunningBroker
from tests.conformance.raw_client import PINGRESP, RawClient, Will

pytestmark = pytest.mark.integration

KEEPALIVE = 2
#: Delivering the will to the watcher once the broker has acted.
DELIVERY = 0.75
#: How long a broker may take, beyond 1.5 x keepalive, to notice the silence.
#: Mosquitto 2.0 before 2.0.21 sweeps its clients' keepalives at most every
#: 6 s (keepalive.c: ``last_keepalive_check + 5 < now``), so a silent client
#: goes offline after up to 1.5 x keepalive + 6 s (measured here: 6.0 s for a
#: keepalive of 1, 2 or 3 s, 12.0 s for 5 s). Every other broker gets no slack.
SWEEP_SLACK = {"mosquitto": 6.0}

# Unpatched amqtt 0.12.1 (candidate amqtt_db); broker/amqtt_fixes/keepalive.py mends it.
AMQTT_NO_KEEPALIVE = "amqtt 0.12.1 never enforces the keepalive: a silent client stays connected"


@pytest.mark.broker_fails(amqtt_db=AMQTT_NO_KEEPALIVE)
def test_will_published_when_a_client_goes_silent(client: Callable[..., RawClient],
                                                  conformance_broker: RunningBroker,
                                                  topic_root: str) -> None:
    """§3.1.2.10: no packet for 1.5 x keepalive ends the connection, and the will goes out."""
    deadline = 1.5 * KEEPALIVE + SWEEP_SLACK.get(conformance_broker.kind, 0.0) + DELIVERY
    watcher = client("watcher")
    watcher.connected()
    watcher.subscribe((f"{topic_root}/+/status", 1))
    device = client("device")
    will = Will(f"{topic_root}/device/status", b"offline", qos=1)
    device.connected(keepalive=KEEPALIVE, will=will)
    silent_since = time.monotonic()  # the CONNECT was the device's last packet

    message = watcher.next_publish(deadline, topic=will.topic)
    waited = time.monotonic() - silent_since
    assert message is not None, f"no will within {deadline:g} s of silence (keepalive {KEEPALIVE})"
    assert message.payload == b"offline"
    assert waited >= 1.5 * KEEPALIVE - 0.5, f"will after only {waited:.2f} s of silence"
    assert device.wait_closed(1.0), "the will went out but the connection is still open"


def test_pinging_client_stays_connected(client: Callable[..., RawClient]) -> None:
    """The counterpart: a client that pings within its keepalive must not be cut off."""
    device = client("device")
    device.connected(keepalive=KEEPALIVE)
    deadline = time.monotonic() + 2 * KEEPALIVE
    while time.monotonic() < deadline:
        device.ping()
        device.expect(PINGRESP, timeout=KEEPALIVE)
        assert not device.wait_closed(KEEPALIVE / 2)


def test_will_not_published_after_clean_disconnect(client: Callable[..., RawClient],
                                                   topic_root: str) -> None:
    watcher = client("watcher")
    watcher.connected()
    watcher.subscribe((f"{topic_root}/#", 1))
    device = client("device")
    device.connected(keepalive=KEEPALIVE, will=Will(f"{topic_root}/device/status", b"offline"))
    device.disconnect()
    marker = client("marker")
    marker.connected()
    marker.publish(f"{topic_root}/marker", b"", qos=1)
    got = watcher.publishes_until(f"{topic_root}/marker")
    assert [m.topic for m in got] == [f"{topic_root}/marker"], "will sent after DISCONNECT"


def test_will_published_when_the_socket_drops(client: Callable[..., RawClient],
                                              topic_root: str) -> None:
    watcher = client("watcher")
    watcher.connected()
    watcher.subscribe((f"{topic_root}/+/status", 1))
    device = client("device")
    device.connected(will=Will(f"{topic_root}/device/status", b"offline"))
    device.drop()
    assert watcher.expect_publish(5.0).payload == b"offline"
