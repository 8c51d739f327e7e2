"""MQTT user names and passwords, and the credentials file of the embedded broker.

The embedded broker never runs anonymous (amqtt queues offline QoS 1 messages
only for authenticated clients, DESIGN.md section 8), so on first run it makes
one user with a random password and keeps it in ``<data_dir>/credentials.json``
(mode 0600). Every later run, and every local tool (``edge-bus --credentials``),
reads the same file::

    {"username": "edgebus", "password": "..."}

>>> creds = Credentials("cam-1", "s3cret")
>>> creds
Credentials(username='cam-1', password='***')
"""

from __future__ import annotations

import json
import logging
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from broker.atomic_file import write_atomic
from schemas.errors import ConfigError

__all__ = [
    "CREDENTIALS_FILE",
    "DEFAULT_USERNAME",
    "Credentials",
    "generate_password",
    "load_credentials",
    "load_or_create_credentials",
    "write_credentials",
    "write_private_text",
]

logger = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
DEFAULT_USERNAME = "edgebus"
_FIELDS = ("username", "password")
# 24 random bytes: 32 URL-safe characters, pasteable in a shell between quotes.
_PASSWORD_BYTES = 24


@dataclass(frozen=True, slots=True)
class Credentials:
    """One MQTT user name and its password (the password never shows in ``repr``)."""

    username: str
    password: str

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty string")
            # Both end up in line-based files (password files, ACLs, CSV).
            if any(ch in value for ch in "\r\n\0"):
                raise ConfigError(f"{name} must not contain a line break or NUL")
        if ":" in self.username:
            raise ConfigError(f"username {self.username!r} must not contain ':'")
        if self.username != self.username.strip() or " " in self.username:
            raise ConfigError(f"username {self.username!r} must not contain spaces")

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


def generate_password() -> str:
    """A fresh random password (URL-safe characters, never starting with ``-``).

    A leading dash would make ``-P PASSWORD`` read as an option in command-line
    tools (argparse, getopt), so such draws are discarded.
    """
    while True:
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        if not password.startswith("-"):
            return password


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600), atomically.

    A crash mid-write leaves the old file (or none), never half a file.
    """
    write_atomic(Path(path), text.encode("utf-8"), 0o600)


def write_credentials(path: Path, credentials: Credentials) -> None:
    """Write ``credentials`` as a credentials JSON file (mode 0600)."""
    body = json.dumps({"username": credentials.username, "password": credentials.password},
                      indent=2)
    try:
        write_private_text(Path(path), body + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write credentials file {path}: {exc.strerror or exc}") from exc


def load_credentials(path: Path) -> Credentials:
    """Read a credentials JSON file; unknown or missing keys are errors naming the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(f"credentials file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"credentials file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"credentials file {path} must hold a JSON object")
    for key in data:
        if key not in _FIELDS:
            raise ConfigError(f"credentials file {path}: unknown key {key!r} "
                              f"(expected {', '.join(_FIELDS)})")
    for key in _FIELDS:
        if key not in data:
            raise ConfigError(f"credentials file {path}: missing key {key!r}")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("credentials file %s is readable by others (mode %o); chmod 600 it",
                       path, stat.S_IMODE(mode))
    try:
        return Credentials(username=data["username"], password=data["password"])
    except ConfigError as exc:
        raise ConfigError(f"credentials file {path}: {exc}") from exc


def load_or_create_credentials(data_dir: Path, username: str = DEFAULT_USERNAME) -> Credentials:
    """The credentials in ``data_dir/credentials.json``, made with a random password if absent.

    ``username`` is used only when the file is created; an existing file wins.
    """
    path = Path(data_dir) / CREDENTIALS_FILE
    if path.exists():
        return load_credentials(path)
    creds = Credentials(username=username, password=generate_password())
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {data_dir}: "
                          f"{exc.strerror or exc}") from exc
    write_credentials(path, creds)
    logger.info("created broker credentials for user %r in %s", username, path)
    return creds
