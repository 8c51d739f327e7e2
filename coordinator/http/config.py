"""The ``[http]`` table of coordinator.toml: where the API and dashboard listen, and who may change things.

Every key is optional::

    [http]
    enabled = true            # false: no HTTP server at all
    host = "127.0.0.1"        # loopback by default; "0.0.0.0" (or an address) exposes it
    port = 8780
    token = "..."             # bearer token for changes (acknowledging anomalies); or:
    token_file = "/etc/edgebus/api-token"
    tls_certfile = "/etc/edgebus/api.crt"   # both or neither: HTTPS and WSS
    tls_keyfile = "/etc/edgebus/api.key"
    live_queue = 1000         # live-feed messages a WebSocket client may fall behind before it is dropped

Reading is open to anyone who can reach the port; anything that changes the fleet needs
``Authorization: Bearer <token>``. Without a token nothing can be changed over HTTP.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.config_values import check_section_keys, int_option, section_table
from schemas.errors import ConfigError

__all__ = ["DEFAULT_HTTP_PORT", "HttpConfig"]

DEFAULT_HTTP_PORT = 8780
_KEYS = {"enabled", "host", "port", "token", "token_file", "tls_certfile", "tls_keyfile", "live_queue"}
_MIN_TOKEN = 16


def _text(key: str, data: Mapping[str, Any]) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"http.{key} must be a non-empty string, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The parsed ``[http]`` table; see the module docstring."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    token: str | None = None
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    live_queue: int = 1000

    def __repr__(self) -> str:  # the token stays out of logs
        return (f"HttpConfig(enabled={self.enabled}, host={self.host!r}, port={self.port}, "
                f"token={'set' if self.token else None}, tls={self.tls})")

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def url(self, port: int | None = None) -> str:
        """The dashboard's address as a browser on this machine would write it."""
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port if port is None else port}/"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> HttpConfig:
        data = section_table("http", data)
        check_section_keys("http", data, _KEYS)
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"http.enabled must be true or false, not {enabled!r}")
        host = _text("host", data) or "127.0.0.1"
        port = int_option("http", data, "port", DEFAULT_HTTP_PORT, low=0, high=65535)
        token = _text("token", data)
        token_file = _text("token_file", data)
        if token is not None and token_file is not None:
            raise ConfigError("http: give token or token_file, not both")
        if token_file is not None:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"http.token_file: cannot read {token_file}: {exc}") from exc
        if token is not None and len(token) < _MIN_TOKEN:
            raise ConfigError(f"http token must be at least {_MIN_TOKEN} characters (it guards changes "
                              "to the fleet); `python -c 'import secrets; print(secrets.token_urlsafe())'` "
                              "makes one")
        cert, key = _text("tls_certfile", data), _text("tls_keyfile", data)
        if (cert is None) != (key is None):
            raise ConfigError("http: tls_certfile and tls_keyfile go together")
        for name, path in (("tls_certfile", cert), ("tls_keyfile", key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"http.{name}: no file {path}")
        live_queue = int_option("http", data, "live_queue", 1000, low=10, high=math.inf)
        return cls(enabled=enabled, host=host, port=port, token=token,
                   tls_certfile=Path(cert) if cert else None, tls_keyfile=Path(key) if key else None,
                   live_queue=live_queue)
