"""A project certificate authority: the CA, the broker's certificate, one client certificate per device.

Everything lives in one directory (:class:`CaLayout`)::

    ca.pem  ca.key                      the project CA (keep ca.key offline if you can)
    server.pem  server.key              Mosquitto's TLS listener
    clients/<name>.pem  <name>.key      one per device (CN = device id) or coordinator user

Keys are EC P-256 (ECDSA with SHA-256): Mosquitto, Python's ``ssl`` (paho) and
the mbedTLS of small devices all speak it, and Ed25519 certificates are still
refused by many TLS 1.2 stacks. Private keys are written mode 0600 with the
atomic file helper; an existing CA is never replaced without ``force`` (every
certificate it signed would stop working).

Mosquitto's ``use_identity_as_username`` makes a client certificate's CN the
user name the ACL sees, so the CN must be the device id - and any certificate
this CA signs is a login: ``cafile`` must hold the project CA only.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.atomic_file import write_atomic
from schemas.errors import ConfigError, TopicError
from schemas.topics import validate_device_id

__all__ = [
    "CA_DAYS",
    "CLIENT_DAYS",
    "SERVER_DAYS",
    "CaLayout",
    "IssuedFiles",
    "init_ca",
    "issue_client_cert",
    "issue_server_cert",
]

logger = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 825
#: Certificates start a little in the past so a device whose clock lags a bit still accepts them.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """Where one certificate and its private key were written."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class CaLayout:
    """The file names inside a CA directory."""

    directory: Path

    @property
    def ca(self) -> IssuedFiles:
        return IssuedFiles(self.directory / "ca.pem", self.directory / "ca.key")

    @property
    def server(self) -> IssuedFiles:
        return IssuedFiles(self.directory / "server.pem", self.directory / "server.key")

    def client(self, name: str) -> IssuedFiles:
        return IssuedFiles(self.directory / "clients" / f"{name}.pem",
                           self.directory / "clients" / f"{name}.key")


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgebus"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _days(days: int) -> datetime.timedelta:
    if not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a positive whole number, not {days!r}")
    return datetime.timedelta(days=days)


def _write(files: IssuedFiles, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    try:
        write_atomic(files.key, key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), 0o600)
        write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {files.cert}: {exc.strerror or exc}") from exc


def _load_ca(layout: CaLayout) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    files = layout.ca
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(f"no project CA in {layout.directory} ({exc.filename} is missing); "
                          "create one with `edge-broker tls init-ca`") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the project CA in {layout.directory}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{files.key} is not an EC key")
    return cert, key


def init_ca(directory: Path, *, common_name: str = "edgebus project CA", days: int = CA_DAYS,
            force: bool = False, now: datetime.datetime | None = None) -> IssuedFiles:
    """Create the project CA in ``directory``; refuse to replace one unless ``force``."""
    layout = CaLayout(Path(directory))
    files = layout.ca
    if not force and (files.cert.exists() or files.key.exists()):
        raise ConfigError(f"{files.cert} already exists; replacing it invalidates every "
                          "certificate it signed (use --force if that is what you want)")
    start = _now(now) - _BACKDATE
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(_name(common_name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + _days(days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write(files, cert, key)
    logger.info("created project CA %s (valid until %s)", files.cert, cert.not_valid_after_utc)
    return files


def _issue(layout: CaLayout, files: IssuedFiles, common_name: str,
           sans: Sequence[x509.GeneralName], usage: x509.ObjectIdentifier, days: int,
           now: datetime.datetime | None) -> IssuedFiles:
    ca_cert, ca_key = _load_ca(layout)
    start = _now(now) - _BACKDATE
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(common_name))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + _days(days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    _write(files, builder.sign(ca_key, hashes.SHA256()), key)
    logger.info("issued %s for %s", files.cert, common_name)
    return files


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c.isspace() or c in "/:@" for c in host):
        raise ConfigError(f"--host must be a host name or an IP address, not {host!r}")
    return x509.DNSName(host)


def issue_server_cert(directory: Path, hosts: Sequence[str], *, days: int = SERVER_DAYS,
                      now: datetime.datetime | None = None) -> IssuedFiles:
    """The broker's certificate, valid for every name and address in ``hosts`` (its SANs).

    Clients check the name they connect to against the SANs, so list every name
    devices use (and 127.0.0.1 for a local coordinator).
    """
    if not hosts:
        raise ConfigError("the server certificate needs at least one --host (a name or an "
                          "address clients connect to)")
    layout = CaLayout(Path(directory))
    return _issue(layout, layout.server, hosts[0], [_host_name(h) for h in hosts],
                  ExtendedKeyUsageOID.SERVER_AUTH, days, now)


def issue_client_cert(directory: Path, name: str, *, days: int = CLIENT_DAYS,
                      now: datetime.datetime | None = None) -> IssuedFiles:
    """A client certificate whose CN is ``name``: a device id, or a coordinator user name.

    With the generated TLS listener the CN *is* the MQTT user: a certificate
    for a coordinator user carries that user's rights.
    """
    try:
        validate_device_id(name)
    except TopicError as exc:
        raise ConfigError(f"client certificate name: {exc}") from exc
    layout = CaLayout(Path(directory))
    return _issue(layout, layout.client(name), name, [], ExtendedKeyUsageOID.CLIENT_AUTH, days,
                  now)
