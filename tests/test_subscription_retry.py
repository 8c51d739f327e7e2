"""A subscription the broker refused is asked for again, with back-off, until it is granted.

The schedule is pure (:mod:`broker.subscription_retry`); the behaviour runs
against a real Mosquitto whose dynamic-security plugin refuses the SUBSCRIBE
(SUBACK 0x80 under MQTT 3.1.1) until an admin allows it at run time. Mosquitto's
plain ``acl_file`` is no use here: 2.0 grants every SUBSCRIBE and filters on
delivery, and a change of a role's ACLs disconnects the clients holding it, so
the test changes the plugin's default subscribe access, which disconnects nobody.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.router import Route
from broker.session import BusConfig, BusSession
from broker.subscription_retry import RefusedSubscriptions
from broker.telemetry import MetricsPublisher
from schemas.errors import ConfigError, SubscriptionRefused
from schemas.messages import MetricSample
from schemas.stored_ack import StoredAck, StreamAck
from tests.brokers import (
    _LIVE,
    READY_TIMEOUT,
    MqttProbe,
    end_process,
    free_port,
    require_mosquitto,
    wait_for_port,
)
from tests.bus_helpers import WAIT, Inbox, wait_until

# -- the schedule (pure) ---------------------------------------------------


def test_the_pause_doubles_from_the_minimum_to_the_maximum() -> None:
    refused = RefusedSubscriptions(min_delay=1.0, max_delay=60.0)
    delays = [refused.refused("a/#", now=0.0, draw=0.0).delay for _ in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert [r.refusals for r in (refused.refused("b", now=0.0, draw=0.0) for _ in range(3))] == [1, 2, 3]


def test_jitter_shortens_a_pause_by_at_most_half() -> None:
    refused = RefusedSubscriptions(min_delay=1.0, max_delay=60.0)
    rng = random.Random(3)
    for n in range(1, 12):
        base = min(2.0 ** (n - 1), 60.0)
        for _ in range(50):
            assert base / 2 < refused.delay(n, rng.random()) <= base
    assert refused.delay(200, 0.0) == 60.0  # no overflow after a long outage


def test_a_filter_is_due_once_per_refusal_and_forgotten_when_granted() -> None:
    refused = RefusedSubscriptions(min_delay=1.0, max_delay=60.0)
    retry = refused.refused("a/#", now=10.0, draw=0.5)
    assert retry.due == 10.75 and refused.filters() == ("a/#",) and refused
    assert refused.due(10.7) == []
    assert refused.due(11.0) == ["a/#"]
    assert refused.due(100.0) == []  # its SUBSCRIBE is in flight: not sent twice
    assert refused.filters() == ("a/#",)  # still refused until the broker says otherwise
    refused.refused("a/#", now=11.0, draw=0.0)
    assert refused.due(13.0) == ["a/#"]
    assert refused.granted("a/#") == 2 and not refused and refused.filters() == ()
    assert refused.granted("a/#") == 0


def test_unsubscribe_and_reconnect_end_the_retries() -> None:
    refused = RefusedSubscriptions(min_delay=1.0, max_delay=60.0)
    for name in ("a", "b", "c"):
        refused.refused(name, now=0.0, draw=0.0)
    refused.forget("b")
    assert refused.filters() == ("a", "c") and refused.due(5.0) == ["a", "c"]
    refused.clear()
    assert refused.filters() == () and refused.due(1e9) == []
    # after a reconnect the back-off starts again from the minimum
    assert refused.refused("a", now=0.0, draw=0.0).delay == 1.0


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (2.0, 1.0), (1.0, float("inf")), (-1.0, 1.0)])
def test_bad_retry_delays_are_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError):
        RefusedSubscriptions(min_delay=low, max_delay=high)
    with pytest.raises(ConfigError, match="subscribe_retry"):
        BusConfig.from_mapping({"subscribe_retry_min_delay": low, "subscribe_retry_max_delay": high,
                                "clean_start": True})


# -- against Mosquitto -------------------------------------------------------

ADMIN, ADMIN_PASSWORD = "admin", "admin-pw"
DYNSEC = "$CONTROL/dynamic-security/v1"


def _dynsec_plugin() -> str:
    for candidate in (*Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"),
                      Path("/usr/lib/mosquitto_dynamic_security.so"),
                      Path("/usr/local/lib/mosquitto_dynamic_security.so")):
        if candidate.is_file():
            return str(candidate)
    message = "no mosquitto_dynamic_security.so (it ships with the mosquitto package)"
    if os.environ.get("EDGEBUS_REQUIRE_MOSQUITTO") == "1":
        pytest.fail(f"EDGEBUS_REQUIRE_MOSQUITTO=1 but {message}", pytrace=False)
    pytest.skip(message)


def _dynsec_config() -> dict[str, object]:
    """Anonymous clients may publish but not subscribe (default access); the admin may drive the
    plugin and subscribe."""
    salt = os.urandom(12)
    iterations = 101
    digest = hashlib.pbkdf2_hmac("sha512", ADMIN_PASSWORD.encode(), salt, iterations, 64)
    admin_acls = [{"acltype": kind, "topic": topic, "priority": 0, "allow": True}
                  for kind, topic in (("publishClientSend", "$CONTROL/dynamic-security/#"),
                                      ("subscribePattern", "$CONTROL/dynamic-security/#"),
                                      ("publishClientSend", "edgebus/#"),
                                      ("subscribePattern", "edgebus/#"))]
    return {
        "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
        "clients": [{"username": ADMIN, "password": base64.b64encode(digest).decode(),
                     "salt": base64.b64encode(salt).decode(), "iterations": iterations,
                     "roles": [{"rolename": "admin"}]}],
        "groups": [],
        "roles": [{"rolename": "admin", "acls": admin_acls}],
    }


@pytest.fixture
def dynsec_mosquitto(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto with the dynamic-security plugin on a free port; yields the port."""
    binary, plugin = require_mosquitto(), _dynsec_plugin()
    port = free_port()
    (tmp_path / "dynsec.json").write_text(json.dumps(_dynsec_config()))
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", f"plugin {plugin}",
        f"plugin_opt_config_file {tmp_path / 'dynsec.json'}",
        # As root Mosquitto drops to user "mosquitto", who cannot read tmp_path.
        *(["user root"] if os.geteuid() == 0 else []), ""]))
    with (tmp_path / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    _LIVE.add(proc)
    try:
        assert wait_for_port("127.0.0.1", port, READY_TIMEOUT, alive=proc), \
            (tmp_path / "mosquitto.log").read_text(errors="replace")
        yield port
    finally:
        end_process(proc, signal.SIGTERM)
        _LIVE.discard(proc)


def _allow_subscribe(admin: MqttProbe) -> None:
    admin.publish(DYNSEC, json.dumps({"commands": [{
        "command": "setDefaultACLAccess", "acls": [{"acltype": "subscribe", "allow": True}]}]}))


def _granted(route: Route) -> bool:
    try:
        return route.wait_subscribed(0.2)
    except SubscriptionRefused:
        return False


@pytest.mark.integration
def test_a_refused_subscription_is_granted_later_without_a_reconnect(
        dynsec_mosquitto: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.session")
    topic_filter = "edgebus/cam-9/cmd/#"
    bus = BusSession(BusConfig(port=dynsec_mosquitto, client_id="retrier", clean_start=True,
                               protocol="3.1.1", reconnect_min_delay=0.05,
                               subscribe_retry_min_delay=0.05, subscribe_retry_max_delay=0.2),
                     rng=random.Random(1))
    inbox = Inbox()
    route = bus.subscribe(topic_filter, inbox)
    admin = MqttProbe(("127.0.0.1", dynsec_mosquitto), "admin", ADMIN, ADMIN_PASSWORD).connected()
    try:
        bus.start()
        assert bus.wait_connected(WAIT)
        with pytest.raises(SubscriptionRefused, match="cmd/#"):
            route.wait_subscribed(WAIT)
        # The broker keeps refusing: each refusal is logged once and the filter is in the status.
        assert wait_until(lambda: "refusal 3 in a row" in caplog.text), caplog.text
        assert bus.stats().refused_subscriptions == (topic_filter,)

        _allow_subscribe(admin)

        assert wait_until(lambda: _granted(route)), caplog.text
        admin.publish("edgebus/cam-9/cmd/hello", b"now you hear me")
        assert inbox.wait_for(lambda ms: [m.payload for m in ms] == [b"now you hear me"])
        stats = bus.stats()
        assert (stats.connects, stats.connection_losses) == (1, 0), "it reconnected"
        assert stats.refused_subscriptions == ()
        assert f"broker granted the subscription to {topic_filter} after" in caplog.text
    finally:
        admin.close()
        bus.stop(flush_timeout=0)


@pytest.mark.integration
def test_an_unsubscribed_refused_filter_is_not_asked_for_again(
        dynsec_mosquitto: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="broker.session")
    bus = BusSession(BusConfig(port=dynsec_mosquitto, client_id="quitter", clean_start=True,
                               protocol="3.1.1", subscribe_retry_min_delay=0.05,
                               subscribe_retry_max_delay=0.1), rng=random.Random(2))
    route = bus.subscribe("edgebus/cam-8/cmd/#", Inbox())
    try:
        bus.start()
        assert wait_until(lambda: bus.stats().refused_subscriptions == ("edgebus/cam-8/cmd/#",))
        bus.unsubscribe(route)
        assert bus.stats().refused_subscriptions == ()
        caplog.clear()
        # A probe after the session's own: once its SUBACK is in, any retry would have been logged.
        assert wait_until(lambda: bus.router.routes() == [] and bus.is_connected)
        probe = bus.subscribe("edgebus/probe/#", Inbox())
        with pytest.raises(SubscriptionRefused):
            probe.wait_subscribed(WAIT)
        assert wait_until(lambda: "refusal 2 in a row" in caplog.text), caplog.text
        assert "cam-8" not in caplog.text
    finally:
        bus.stop(flush_timeout=0)


@pytest.mark.integration
def test_a_late_grant_of_the_stored_acknowledgements_sends_the_unconfirmed_again(
        dynsec_mosquitto: int) -> None:
    """Acknowledgements published while the device was refused them never came: resend, as on a reconnect."""
    bus = BusSession(BusConfig(port=dynsec_mosquitto, device="cam-7", clean_start=True,
                               protocol="3.1.1", end_to_end_ack="required", ack_timeout=600.0,
                               subscribe_retry_min_delay=0.05, subscribe_retry_max_delay=0.2),
                     rng=random.Random(3))
    metrics = MetricsPublisher(bus)
    admin = MqttProbe(("127.0.0.1", dynsec_mosquitto), "admin", ADMIN, ADMIN_PASSWORD).connected()
    try:
        admin.subscribe("edgebus/cam-7/metrics")
        bus.start()
        assert wait_until(lambda: bus.stats().refused_subscriptions == ("edgebus/cam-7/cmd/stored",))
        assert metrics.publish([MetricSample(time_ms=1, name="temp", value=21.5)])
        first = admin.expect()
        assert wait_until(lambda: bus.stats().acknowledged == 1)  # the broker has it; the coordinator?
        assert bus.stats().awaiting_confirmation == 1 and bus.stats().resent == 0

        _allow_subscribe(admin)

        again = admin.expect(WAIT)  # long before ack_timeout: sent again because of the grant
        assert again.payload == first.payload and bus.stats().resent == 1
        assert bus.stats().refused_subscriptions == ()
        admin.publish("edgebus/cam-7/cmd/stored",
                      StoredAck({"metrics": StreamAck(metrics.epoch, ((0, 1),))}).encode(), retain=True)
        assert bus.flush(WAIT)
        assert bus.stats().awaiting_confirmation == 0
    finally:
        admin.close()
        bus.stop(flush_timeout=0)
