"""The TLS context a bus client connects with: the project CA, and optionally its own certificate.

Built once, when a session is made, so that a missing file, a key that does
not match its certificate or a certificate outside its validity period is a
:class:`~schemas.errors.ConfigError` at start naming the file - not a TLS
alert from the broker on every reconnect.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

from cryptography import x509

from schemas.errors import ConfigError

__all__ = ["check_certificate_dates", "client_tls_context"]


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"broker: {what} {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"broker: cannot read {what} {path}: {exc.strerror or exc}") from exc


def check_certificate_dates(path: Path, *, now: datetime.datetime | None = None) -> x509.Certificate:
    """The certificate in ``path``; ConfigError if it is expired or not yet valid at ``now``."""
    try:
        cert = x509.load_pem_x509_certificate(_read(path, "tls_cert"))
    except ValueError as exc:
        raise ConfigError(f"broker: tls_cert {path} is not a PEM certificate: {exc}") from exc
    moment = now if now is not None else datetime.datetime.now(datetime.UTC)
    if moment < cert.not_valid_before_utc:
        raise ConfigError(f"broker: tls_cert {path} is not valid before "
                          f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this clock right?)")
    if moment > cert.not_valid_after_utc:
        raise ConfigError(f"broker: tls_cert {path} expired on "
                          f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; issue a new one with "
                          "`edge-broker tls device-cert`")
    return cert


def client_tls_context(ca: Path, cert: Path | None = None, key: Path | None = None, *,
                       now: datetime.datetime | None = None) -> ssl.SSLContext:
    """A context that trusts ``ca`` only and presents ``cert``/``key`` when given."""
    _read(ca, "tls_ca")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"broker: tls_ca {ca} holds no usable CA certificate: {exc}") from exc
    if cert is not None and key is not None:
        check_certificate_dates(cert, now=now)
        _read(key, "tls_key")
        try:
            context.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as exc:
            raise ConfigError(f"broker: tls_key {key} does not fit tls_cert {cert} "
                              f"(or is not a PEM key): {exc}") from exc
    return context
