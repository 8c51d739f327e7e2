"""TLS with per-device client certificates, end to end on a real Mosquitto running the generated config.

The project CA, the broker's and the devices' certificates come from
:mod:`broker.tls.ca`; the listener requires a certificate and takes the user
name from its CN, so the ACL's ``%u`` lanes follow the certificate. A watcher
logs in with a password on the plain loopback listener of the same config.
"""

from __future__ import annotations

import datetime
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from broker.coordination.transport import PeerTransport
from broker.credentials import Credentials, generate_password
from broker.mosquitto_config import MosquittoSite, TlsFiles
from broker.session import BusConfig, BusSession
from broker.tls.ca import CaLayout, init_ca, issue_client_cert, issue_server_cert
from broker.tls.client import client_tls_context
from schemas.errors import ConfigError
from tests.brokers import MosquittoUnderTest, MqttProbe, Received, free_port

pytestmark = pytest.mark.integration

ADMIN = Credentials("edgebus-admin", generate_password())
WAIT = 15.0


@dataclass(frozen=True)
class TlsSite:
    broker: MosquittoUnderTest
    layout: CaLayout
    other_ca: CaLayout
    expired: CaLayout  # the project CA's files, plus an expired certificate for gw-a

    def watcher(self) -> MqttProbe:
        """A coordinator on the loopback listener (password login)."""
        return MqttProbe(("127.0.0.1", self.broker.site.loopback_port or 0), None,
                         ADMIN.username, ADMIN.password)

    def device(self, cert_dir: CaLayout | None, name: str = "gw-a") -> MqttProbe:
        """A probe on the TLS listener presenting ``name``'s certificate from ``cert_dir``."""
        probe = MqttProbe(("127.0.0.1", self.broker.port), f"probe-{name}")
        context = ssl.create_default_context(cafile=str(self.layout.ca.cert))
        if cert_dir is not None:
            files = cert_dir.client(name)
            context.load_cert_chain(str(files.cert), str(files.key))  # no date check: the broker's job
        probe.client.tls_set_context(context)
        probe.client.reconnect_delay_set(min_delay=0.05, max_delay=0.05)  # type: ignore[arg-type]
        # A TLS alert after the handshake ends the connection before any CONNACK: count it as one.
        probe.client.on_disconnect = lambda c, u, flags, rc, props: probe.connack.put((rc, False))
        return probe


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    root = tmp_path_factory.mktemp("tls")
    layout, other, expired = CaLayout(root / "ca"), CaLayout(root / "other"), CaLayout(root / "old")
    init_ca(layout.directory)
    issue_server_cert(layout.directory, ["localhost", "127.0.0.1"])
    for name in ("gw-a", "gw-b", ADMIN.username):
        issue_client_cert(layout.directory, name)
    init_ca(other.directory)
    issue_client_cert(other.directory, "gw-a")
    expired.directory.mkdir()
    for src in (layout.ca.cert, layout.ca.key):
        shutil.copy(src, expired.directory / src.name)
    ten_days_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    issue_client_cert(expired.directory, "gw-a", days=1, now=ten_days_ago)

    site = MosquittoSite(
        listener_host="127.0.0.1", port=free_port(), data_dir=root / "data",
        devices=[Credentials("gw-a", generate_password()), Credentials("gw-b", generate_password())],
        coordinators=[ADMIN],
        tls=TlsFiles(certfile=layout.server.cert, keyfile=layout.server.key,
                     cafile=layout.ca.cert, require_certificate=True),
        loopback_port=free_port())
    broker = MosquittoUnderTest(root, site)
    broker.start()
    try:
        yield TlsSite(broker, layout, other, expired)
    finally:
        broker.stop()


def _refused(probe: MqttProbe) -> bool:
    """Whether the broker turned the connection away (TLS alert, handshake error or bad CONNACK)."""
    try:
        rc, _ = probe.connect(WAIT)
    except (ssl.SSLError, OSError):
        return True
    finally:
        probe.close()
    return rc.is_failure


def _until(probe: MqttProbe, topic: str) -> list[Received]:
    got = [probe.expect(WAIT)]
    while got[-1].topic != topic:
        got.append(probe.expect(WAIT))
    return got


def test_a_device_publishes_on_its_own_lane_with_its_certificate(tls_site: TlsSite) -> None:
    watcher = tls_site.watcher().connected()
    files = tls_site.layout.client("gw-a")
    bus = BusSession(BusConfig(host="127.0.0.1", port=tls_site.broker.port, device="gw-a",
                               clean_start=True, tls_ca=tls_site.layout.ca.cert,
                               tls_cert=files.cert, tls_key=files.key, reconnect_min_delay=0.05))
    try:
        watcher.subscribe("edgebus/#")
        bus.start()
        assert bus.wait_connected(WAIT), bus.stats().last_error
        assert bus.publish("edgebus/gw-a/state/mode", b"day", qos=1)
        got = _until(watcher, "edgebus/gw-a/state/mode")
        assert got[-1].payload == b"day"
    finally:
        bus.stop()
        watcher.close()


def test_a_coordinator_with_its_certificate_has_its_rights_over_tls(tls_site: TlsSite) -> None:
    """The coordination transport connects with a certificate whose CN is a coordinator user."""
    watcher = tls_site.watcher().connected()
    files = tls_site.layout.client(ADMIN.username)
    peer = PeerTransport(BusConfig(host="127.0.0.1", port=tls_site.broker.port, clean_start=True,
                                   tls_ca=tls_site.layout.ca.cert, tls_cert=files.cert,
                                   tls_key=files.key, reconnect_min_delay=0.05), "coord-tls")
    try:
        watcher.subscribe("edgebus/_sys/#")
        peer.start()
        assert peer.wait_connected(WAIT)
        assert peer.publish("edgebus/_sys/raft/site/n1", b"hello", qos=1)  # no device may
        assert _until(watcher, "edgebus/_sys/raft/site/n1")[-1].payload == b"hello"
    finally:
        peer.stop()
        watcher.close()


def test_the_certificate_of_device_a_cannot_publish_on_device_b_s_lane(tls_site: TlsSite) -> None:
    watcher = tls_site.watcher().connected()
    device = tls_site.device(tls_site.layout, "gw-a")
    try:
        watcher.subscribe("edgebus/#")
        assert not device.connect(WAIT)[0].is_failure
        # No user name and no password: the CN is the login.
        device.publish("edgebus/gw-b/metrics", b"forged")
        device.publish("edgebus/gw-b/cmd/config", b"forged")
        device.publish("edgebus/gw-a/state/sentinel", b"last")
        arrived = [m.topic for m in _until(watcher, "edgebus/gw-a/state/sentinel")]
    finally:
        device.close()
        watcher.close()
    assert [t for t in arrived if t.startswith("edgebus/gw-b/")] == []
    assert arrived[-1] == "edgebus/gw-a/state/sentinel"


def test_no_certificate_is_refused(tls_site: TlsSite) -> None:
    assert _refused(tls_site.device(None))


def test_a_certificate_from_another_ca_is_refused(tls_site: TlsSite) -> None:
    assert _refused(tls_site.device(tls_site.other_ca, "gw-a"))


def test_an_expired_certificate_is_refused_by_the_broker(tls_site: TlsSite) -> None:
    assert _refused(tls_site.device(tls_site.expired, "gw-a"))
    assert not _refused(tls_site.device(tls_site.layout, "gw-a"))  # the same name, valid: accepted


def test_a_password_does_not_replace_the_certificate(tls_site: TlsSite) -> None:
    probe = tls_site.device(None)
    probe.client.username_pw_set(ADMIN.username, ADMIN.password)
    assert _refused(probe)


def test_the_client_names_an_expired_or_missing_certificate_before_connecting(
        tls_site: TlsSite) -> None:
    ca = tls_site.layout.ca.cert
    old = tls_site.expired.client("gw-a")
    with pytest.raises(ConfigError, match=r"tls_cert .*gw-a\.pem expired on"):
        BusConfig(tls_ca=ca, tls_cert=old.cert, tls_key=old.key, clean_start=True).tls_context()
    with pytest.raises(ConfigError, match=r"tls_key .*missing\.key does not exist"):
        client_tls_context(ca, tls_site.layout.client("gw-a").cert, old.key.with_name("missing.key"))
    later = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    with pytest.raises(ConfigError, match="is not valid before"):
        files = tls_site.layout.client("gw-b")
        client_tls_context(ca, files.cert, files.key, now=later)
