"""A session over TLS to a real Mosquitto (the site's TLS listener): messages flow, a wrong CA is refused.

The session's paho client reads and writes through BufferedSocket; over TLS that
wraps an ``ssl.SSLSocket`` whose ``pending()`` counts decrypted bytes, the case
the plain-TCP tests do not reach.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.buffered_socket import BufferedSocket
from broker.credentials import Credentials, generate_password
from broker.mosquitto_config import MosquittoSite, TlsFiles
from broker.session import BusSession
from tests.brokers import MosquittoUnderTest, free_port
from tests.bus_helpers import WAIT, Inbox, config_for, wait_until

pytestmark = pytest.mark.integration

_MINUTES_5 = datetime.timedelta(minutes=5)
_DAY = datetime.timedelta(days=1)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _MINUTES_5).not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return _write_pem(directory / f"{name}.pem", cert), key, cert


def make_server_cert(directory: Path, ca_key: ec.EllipticCurvePrivateKey,
                     ca_cert: x509.Certificate) -> TlsFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _MINUTES_5).not_valid_after(now + _DAY)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    keyfile = directory / "server.key"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return TlsFiles(certfile=_write_pem(directory / "server.pem", cert), keyfile=keyfile)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[MosquittoUnderTest, Path, Path]]:
    """Mosquitto with only a TLS listener; (broker, the CA that signed it, another CA)."""
    ca_file, ca_key, ca_cert = make_ca(tmp_path, "site-ca")
    other_ca, _, _ = make_ca(tmp_path, "other-ca")
    site = MosquittoSite(listener_host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data",
                         coordinators=[Credentials("edgebus-admin", generate_password())],
                         tls=make_server_cert(tmp_path, ca_key, ca_cert))
    broker = MosquittoUnderTest(tmp_path, site)
    broker.start()
    try:
        yield broker, ca_file, other_ca
    finally:
        broker.stop()


def test_messages_flow_both_ways_over_tls_through_the_buffered_socket(
        tls_broker: tuple[MosquittoUnderTest, Path, Path]) -> None:
    broker, ca_file, _ = tls_broker
    inbox = Inbox()
    bus = BusSession(config_for(broker, client_id="tls-check", tls_ca=ca_file))
    bus.subscribe("edgebus/tls/#", inbox)
    bus.start()
    try:
        assert bus.wait_connected(WAIT), bus.stats().last_error
        client = bus._conn.client if bus._conn is not None else None
        sock = client.socket() if client is not None else None
        assert isinstance(sock, BufferedSocket) and isinstance(sock.raw, ssl.SSLSocket)
        payloads = [bytes([i % 251]) * (1 + i * 37 % 5000) for i in range(300)]  # small and multi-record
        for i, payload in enumerate(payloads):
            assert bus.publish(f"edgebus/tls/{i}", payload, qos=1)
        assert inbox.wait_for(lambda ms: len(ms) == len(payloads)), f"received {len(inbox.messages)}"
        got = {m.topic: m.payload for m in inbox.messages}
        assert all(got[f"edgebus/tls/{i}"] == payload for i, payload in enumerate(payloads))
        assert bus.flush(WAIT)
    finally:
        bus.stop()


def test_a_broker_certificate_from_another_ca_is_refused(
        tls_broker: tuple[MosquittoUnderTest, Path, Path]) -> None:
    broker, _, other_ca = tls_broker
    bus = BusSession(config_for(broker, client_id="tls-wrong-ca", tls_ca=other_ca))
    bus.start()
    try:
        assert not bus.wait_connected(2.0)
        assert wait_until(lambda: "certificate" in (bus.stats().last_error or "").lower()), \
            bus.stats().last_error
    finally:
        bus.stop()
