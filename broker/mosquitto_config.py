"""A Mosquitto 2.x site configuration: ``mosquitto.conf``, a password file and an ACL.

:class:`MosquittoSite` renders the three files for one broker that serves a
fleet. What the generated configuration promises:

* **Nobody anonymous; every device its own user.** The device id is the user
  name, so the ACL can name a device's topics with ``%u`` and the broker, not
  the payload, tells devices apart (DESIGN.md section 6).
* **A device writes only under its own topics** - ``{root}/{device}/#`` and
  its Home Assistant discovery topics ``{ha}/+/{node}/#`` (``node`` is the
  device id made Home-Assistant-safe, :func:`schemas.topics.ha_slug`) - and
  reads only its own commands ``{root}/{device}/cmd/#`` and ``{ha}/status``;
  in the coordination protocols it has only its own lanes (lock requests and
  replies, two-phase commit ``from``/``to`` topics), never Raft peer or admin
  topics. The rules come from :class:`broker.acl.BusAcl`, the one ACL the
  embedded broker enforces too.
* **Coordinators** read and write everything under ``{root}/#`` and
  ``{ha}/#`` (also through ``$share/...`` shared subscriptions) and read
  ``$SYS/#``.
* **Nothing accepted is dropped by a default.** Mosquitto's
  ``max_queued_messages 1000`` silently drops QoS 1 messages for a slow
  subscriber; the generated file raises it to 100000 and bounds the queue by
  bytes instead (``max_queued_bytes``, per client). Persistence is on, so
  queued messages and persistent sessions survive a broker restart.

Passwords are stored the way ``mosquitto_passwd`` 2.0 stores them, computed
here in pure Python: ``$7$<iterations>$<base64 salt>$<base64 hash>``, PBKDF2
with HMAC-SHA512 over a 12-byte salt, 101 iterations, 64-byte hash.

>>> entry = mosquitto_password_hash("secret", salt=bytes(12))
>>> entry[:24]
'$7$101$AAAAAAAAAAAAAAAA$'
>>> verify_mosquitto_password("secret", entry), verify_mosquitto_password("nope", entry)
(True, False)

The device list comes from a CSV file, one device per line:
``device_id[,password]`` (a header line ``device_id,password``, blank lines and
``#`` comments are allowed). :func:`read_devices_csv` fills in the missing
passwords - reusing the ones an earlier run handed out, so regenerating never
locks out a flashed device - and :func:`write_credentials_csv` writes the
complete list for the flasher.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from broker.acl import BusAcl
from broker.credentials import Credentials, generate_password, write_private_text
from schemas.errors import ConfigError, TopicError
from schemas.topics import TopicTree, ha_slug, validate_device_id, validate_name

__all__ = [
    "ACL_FILE",
    "CONF_FILE",
    "DEVICE_CREDENTIALS_FILE",
    "PASSWORD_FILE",
    "PBKDF2_ITERATIONS",
    "DeviceRoster",
    "MosquittoSite",
    "SiteFiles",
    "TlsFiles",
    "mosquitto_password_hash",
    "read_credentials_csv",
    "read_devices_csv",
    "verify_mosquitto_password",
    "write_credentials_csv",
]

logger = logging.getLogger(__name__)

CONF_FILE = "mosquitto.conf"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
DEVICE_CREDENTIALS_FILE = "device-credentials.csv"

# mosquitto_passwd 2.0 (src/password_mosq.c): PW_DEFAULT_ITERATIONS 101,
# SALT_LEN 12, SHA-512 output 64 bytes; checked against `mosquitto_passwd -b`.
PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12
_HASH_BYTES = 64
_EXPIRATION_RE = re.compile(r"[1-9][0-9]*[hdwmy]")
_CSV_HEADER = ("device_id", "password")


def mosquitto_password_hash(password: str, *, salt: bytes | None = None,
                            iterations: int = PBKDF2_ITERATIONS) -> str:
    """``password`` hashed as Mosquitto 2.0 stores it (``$7$``: PBKDF2-SHA512)."""
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations,
                                 _HASH_BYTES)
    return (f"$7${iterations}${base64.b64encode(salt).decode('ascii')}"
            f"${base64.b64encode(digest).decode('ascii')}")


def verify_mosquitto_password(password: str, entry: str) -> bool:
    """Whether ``password`` matches a ``$7$`` password-file hash (as Mosquitto checks it)."""
    parts = entry.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations,
                                 len(expected))
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificate files for a TLS listener (PEM). ``cafile`` is needed only to check
    client certificates.

    ``require_certificate``: every client must present a certificate signed by
    ``cafile`` (the project CA, :mod:`broker.tls.ca`), and its CN is the user
    name the ACL sees (``use_identity_as_username``; Mosquitto then ignores the
    password file on this listener), so a device's ``%u`` lanes follow its
    certificate, not a password.
    """

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    require_certificate: bool = False

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile", "cafile"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _config_path(value, f"tls.{name}"))
        if self.require_certificate and self.cafile is None:
            raise ConfigError("tls: client certificates need cafile (the project CA that "
                              "signs them)")


@dataclass(frozen=True, slots=True)
class SiteFiles:
    """Where :meth:`MosquittoSite.write` put the configuration."""

    conf: Path
    passwd: Path
    acl: Path
    data_dir: Path


def _config_path(value: Path | str, key: str) -> Path:
    path = Path(value)
    if any(ch in str(path) for ch in "\r\n\0"):
        raise ConfigError(f"{key}: a path in mosquitto.conf must not contain a line break")
    return path


def _user_name(name: object, what: str) -> str:
    """A user name the ACL file can carry: the id charset, no spaces or wildcards."""
    if not isinstance(name, str):
        raise ConfigError(f"{what} must be a string, not {type(name).__name__}")
    try:
        return validate_name(name, what)
    except TopicError as exc:
        raise ConfigError(str(exc)) from exc


def _as_credentials(value: object, what: str) -> Credentials:
    if isinstance(value, Credentials):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        return Credentials(str(value[0]), str(value[1]))
    raise ConfigError(f"{what} must be Credentials or a (user, password) pair, not {value!r}")


@dataclass(frozen=True, slots=True)
class MosquittoSite:
    """One Mosquitto 2.x broker for a fleet: listener, users, ACL and queue limits.

    ``devices`` and ``coordinators`` are :class:`~broker.credentials.Credentials`
    (or ``(user, password)`` pairs); a device's user name is its device id.
    ``data_dir`` is Mosquitto's ``persistence_location``. ``run_as_user`` is
    Mosquitto's ``user`` option (the user it drops to when started as root;
    ``"root"`` keeps root, which only tests should do).
    """

    listener_host: str = "0.0.0.0"
    port: int = 1883
    data_dir: Path = Path("/var/lib/mosquitto/edgebus")
    devices: Sequence[Credentials] = ()
    coordinators: Sequence[Credentials] = ()
    root: str = "edgebus"
    ha_prefix: str = "homeassistant"
    tls: TlsFiles | None = None
    max_queued_messages: int = 100_000
    max_queued_bytes: int = 256 * 1024 * 1024
    max_inflight_messages: int = 100
    autosave_interval: int = 60
    persistent_client_expiration: str | None = None
    run_as_user: str | None = None
    #: With TLS, a second, plain listener on 127.0.0.1 (password logins; for a local coordinator).
    loopback_port: int | None = None
    _ha_nodes: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        devices = tuple(_as_credentials(d, "devices entry") for d in self.devices)
        coordinators = tuple(_as_credentials(c, "coordinators entry") for c in self.coordinators)
        object.__setattr__(self, "devices", devices)
        object.__setattr__(self, "coordinators", coordinators)
        object.__setattr__(self, "data_dir", _config_path(self.data_dir, "data_dir"))
        if not coordinators:
            raise ConfigError("coordinators: at least one coordinator user is needed, or "
                              "nobody could read what the devices publish")
        try:
            TopicTree(self.root)
        except TopicError as exc:
            raise ConfigError(f"root: {exc}") from exc
        try:
            validate_name(self.ha_prefix, "ha_prefix")
        except TopicError as exc:
            raise ConfigError(str(exc)) from exc
        if self.ha_prefix == self.root.split("/")[0]:
            raise ConfigError(f"ha_prefix {self.ha_prefix!r} must differ from the root's "
                              "first level")
        if not isinstance(self.port, int) or not 0 < self.port <= 65535:
            raise ConfigError(f"port must be 1-65535, not {self.port!r}")
        if not isinstance(self.listener_host, str) or any(c.isspace() for c in
                                                         self.listener_host):
            raise ConfigError(f"listener_host must be an address, not {self.listener_host!r}")
        for key in ("max_queued_messages", "max_inflight_messages", "autosave_interval"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, not {value!r}")
        if not isinstance(self.max_queued_bytes, int) or self.max_queued_bytes < 0:
            raise ConfigError("max_queued_bytes must be a non-negative integer (0: no limit)")
        expiration = self.persistent_client_expiration
        if expiration is not None and not _EXPIRATION_RE.fullmatch(str(expiration)):
            raise ConfigError(f"persistent_client_expiration must look like 14d (h, d, w, m "
                              f"or y), not {expiration!r}")
        if self.run_as_user is not None:
            _user_name(self.run_as_user, "run_as_user")
        if self.loopback_port is not None:
            if self.tls is None:
                raise ConfigError("loopback_port is a plain listener beside the TLS one; "
                                  "without TLS the one listener is plain already")
            if not isinstance(self.loopback_port, int) or not 0 < self.loopback_port <= 65535 \
                    or self.loopback_port == self.port:
                raise ConfigError(f"loopback_port must be 1-65535 and differ from port, not "
                                  f"{self.loopback_port!r}")

        seen: dict[str, str] = {}
        for creds in devices:
            try:
                validate_device_id(creds.username)
            except TopicError as exc:
                raise ConfigError(f"devices: {exc}") from exc
            self._claim(seen, creds.username, "device")
        for creds in coordinators:
            _user_name(creds.username, "coordinator user name")
            self._claim(seen, creds.username, "coordinator")

        # Home Assistant ids are narrower than device ids; two devices whose ids
        # map to one node could write each other's discovery topics.
        nodes: dict[str, str] = {}
        for creds in devices:
            node = ha_slug(creds.username)
            if node in nodes:
                raise ConfigError(f"devices {nodes[node]!r} and {creds.username!r} map to the "
                                  f"same Home Assistant node id {node!r}; rename one")
            nodes[node] = creds.username
        object.__setattr__(self, "_ha_nodes", {dev: node for node, dev in nodes.items()})

    @staticmethod
    def _claim(seen: dict[str, str], name: str, role: str) -> None:
        if name in seen:
            raise ConfigError(f"user {name!r} is listed twice (as {seen[name]} and as {role})")
        seen[name] = role

    # -- rendering -----------------------------------------------------------

    def render_passwd(self) -> str:
        """The password file (``user:$7$...`` lines, coordinators first)."""
        users = (*self.coordinators, *self.devices)
        return "".join(f"{c.username}:{mosquitto_password_hash(c.password)}\n" for c in users)

    def acl(self) -> BusAcl:
        """The site's access rules (the same object the embedded broker enforces)."""
        return BusAcl(devices=tuple(c.username for c in self.devices),
                      coordinators=tuple(c.username for c in self.coordinators),
                      root=self.root, ha_prefix=self.ha_prefix)

    def render_acl(self) -> str:
        """The ACL file: ``%u`` patterns for devices, per-user rules (:class:`broker.acl.BusAcl`)."""
        return "\n".join(self.acl().mosquitto_lines()) + "\n"

    def render_conf(self, passwd: Path, acl: Path) -> str:
        """``mosquitto.conf`` that points at ``passwd`` and ``acl`` (use absolute paths)."""
        listener = f"listener {self.port}"
        if self.listener_host:
            listener += f" {self.listener_host}"
        location = str(self.data_dir)
        if not location.endswith("/"):
            location += "/"  # Mosquitto appends the file name to it as is.
        lines = [
            "# edgebus site broker - generated by `edge-broker mosquitto-config`;",
            "# regenerate rather than edit. Start: mosquitto -c <this file>",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
            "",
            listener,
        ]
        if self.tls is not None:
            lines += [f"certfile {self.tls.certfile}", f"keyfile {self.tls.keyfile}"]
            if self.tls.cafile is not None:
                lines.append(f"cafile {self.tls.cafile}")
            lines.append("tls_version tlsv1.2")
            if self.tls.require_certificate:
                lines += ["# A client certificate from the project CA is the login; its CN is the",
                          "# user the ACL sees (the password file is not used on this listener).",
                          "require_certificate true", "use_identity_as_username true"]
            if self.loopback_port is not None:
                lines += ["", "# Plain, password logins, this machine only (a local coordinator).",
                          f"listener {self.loopback_port} 127.0.0.1"]
        lines += [
            "",
            "# Queued QoS 1 messages and persistent sessions survive a restart.",
            "persistence true",
            f"persistence_location {location}",
            f"autosave_interval {self.autosave_interval}",
            "",
            "# The default (1000) silently drops QoS 1 messages for a slow subscriber;",
            "# bound each client's queue by bytes instead (0: no limit).",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_inflight_messages {self.max_inflight_messages}",
            "",
            "# Small request/reply messages (locks, Raft, commands) must not wait ~40 ms for",
            "# Nagle and the peer's delayed ACK.",
            "set_tcp_nodelay true",
        ]
        if self.persistent_client_expiration is not None:
            lines.append(f"persistent_client_expiration {self.persistent_client_expiration}")
        if self.run_as_user is not None:
            lines.append(f"user {self.run_as_user}")
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> SiteFiles:
        """Write ``mosquitto.conf``, ``passwd`` (0600) and ``acl`` into ``directory``.

        Also creates the persistence directory. Paths inside ``mosquitto.conf``
        are absolute, so the broker can be started from anywhere.
        """
        directory = Path(directory).resolve()
        files = SiteFiles(conf=directory / CONF_FILE, passwd=directory / PASSWORD_FILE,
                          acl=directory / ACL_FILE, data_dir=self.data_dir.resolve())
        try:
            directory.mkdir(parents=True, exist_ok=True)
            files.data_dir.mkdir(parents=True, exist_ok=True)
            write_private_text(files.passwd, self.render_passwd())
            write_private_text(files.acl, self.render_acl())
            os.chmod(files.acl, 0o644)
            conf = replace(self, data_dir=files.data_dir).render_conf(files.passwd, files.acl)
            write_private_text(files.conf, conf)
            os.chmod(files.conf, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write the Mosquitto configuration into {directory}: "
                              f"{exc.strerror or exc}") from exc
        logger.info("wrote Mosquitto site configuration to %s (%d devices, %d coordinators)",
                    directory, len(self.devices), len(self.coordinators))
        return files


# -- device lists ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRoster:
    """The devices of a site with a password each, and where each password came from."""

    devices: tuple[Credentials, ...]
    generated: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()


def _csv_rows(path: Path, text: str) -> Iterable[tuple[int, list[str]]]:
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) > 2 and any(cells[2:]):
            raise ConfigError(f"{path} line {number}: expected device_id[,password], "
                              f"found {len(cells)} columns")
        yield number, cells[:2]


def _read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def read_credentials_csv(path: Path) -> dict[str, str]:
    """``device_id -> password`` from a credentials CSV written by :func:`write_credentials_csv`."""
    known: dict[str, str] = {}
    for number, cells in _csv_rows(path, _read_text(path, "credentials file")):
        if tuple(c.lower() for c in cells) == _CSV_HEADER:
            continue
        if len(cells) < 2 or not cells[1]:
            raise ConfigError(f"{path} line {number}: no password for {cells[0]!r}")
        known[cells[0]] = cells[1]
    return known


def read_devices_csv(path: Path, previous: Path | None = None) -> DeviceRoster:
    """Read ``device_id[,password]`` lines; fill in missing passwords.

    A device without a password gets the one ``previous`` (an earlier
    credentials CSV) lists for it, else a fresh random one. Device ids are
    validated; duplicates and malformed lines are errors naming the line.
    """
    path = Path(path)
    earlier = read_credentials_csv(previous) if previous is not None and previous.exists() \
        else {}
    devices: list[Credentials] = []
    generated: list[str] = []
    reused: list[str] = []
    lines: dict[str, int] = {}
    for number, cells in _csv_rows(path, _read_text(path, "devices file")):
        device = cells[0]
        if not lines and device.lower() in ("device_id", "device"):
            continue  # header
        try:
            validate_device_id(device)
        except TopicError as exc:
            raise ConfigError(f"{path} line {number}: {exc}") from exc
        if device in lines:
            raise ConfigError(f"{path} line {number}: device {device!r} already listed on "
                              f"line {lines[device]}")
        lines[device] = number
        password = cells[1] if len(cells) > 1 else ""
        if not password:
            if device in earlier:
                password = earlier[device]
                reused.append(device)
            else:
                password = generate_password()
                generated.append(device)
        try:
            devices.append(Credentials(device, password))
        except ConfigError as exc:
            raise ConfigError(f"{path} line {number}: {exc}") from exc
    if not devices:
        raise ConfigError(f"devices file {path} lists no devices (one device_id[,password] "
                          "per line)")
    return DeviceRoster(tuple(devices), tuple(generated), tuple(reused))


def write_credentials_csv(path: Path, devices: Sequence[Credentials]) -> None:
    """Write ``device_id,password`` for every device (mode 0600), for the flasher."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_HEADER)
    for creds in devices:
        writer.writerow((creds.username, creds.password))
    try:
        write_private_text(Path(path), out.getvalue())
    except OSError as exc:
        raise ConfigError(f"cannot write credentials file {path}: {exc.strerror or exc}") \
            from exc
