"""Revoking a device's broker login while the fleet keeps running.

``revoke_device(device_id, reason)`` is the one hook (:class:`DeviceRevoker`):
the operator's ``edge-broker revoke`` calls it, and so may the PBFT quarantine.
Every revocation is kept in ``revoked-devices.json`` beside the credentials
(:class:`RevokedDevices`), so regenerating a site configuration or restarting
the broker never lets the device back in, and each one is an audit record
(kind ``revocation``) and an event for :meth:`on_revoked` listeners.

* **Mosquitto** (:class:`FileRevoker`, ``edge-broker revoke --site DIR``):
  the device's line leaves the password file and its ``user`` block leaves
  the ACL file, both rewritten atomically in place, then Mosquitto gets SIGHUP. Mosquitto 2.x reloads
  ``password_file`` and ``acl_file`` on SIGHUP and, in
  ``mosquitto_security_apply``, checks every connected client again with its
  stored user name and password: a client whose user is gone is
  disconnected at once (``tests/test_revocation.py`` shows it, with the
  broker's pid unchanged). No take-over connection is needed.
* **The embedded broker** (:meth:`broker.embedded.EmbeddedBroker.revoke_device`):
  its login plugin refuses revoked users from then on, the password file
  loses the user, and the device's live connection is dropped. A broker
  run by ``edge-broker run --devices`` in another process does the same when
  ``edge-broker revoke --data-dir DIR`` (:meth:`FileRevoker.for_embedded`)
  has written the files and sent it SIGHUP.

>>> revoked = RevokedDevices(None)
>>> revoked.add("cam-7", "quarantined", 5).device, "cam-7" in revoked
('cam-7', True)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from broker.atomic_file import write_atomic
from broker.audit import AuditLog
from schemas.audit import AuditKind
from schemas.errors import BrokerError, ConfigError, TopicError
from schemas.topics import validate_device_id

__all__ = ["REVOKED_FILE", "DeviceRevoker", "FileRevoker", "Revocation", "RevocationEvents",
           "RevokedDevices", "drop_acl_user", "drop_csv_device", "drop_password_user"]

logger = logging.getLogger(__name__)

REVOKED_FILE = "revoked-devices.json"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Revocation:
    """One device whose login was taken away, why and when (ms since the epoch)."""

    device: str
    reason: str
    time_ms: int

    def __post_init__(self) -> None:
        try:
            validate_device_id(self.device)
        except TopicError as exc:
            raise ConfigError(str(exc)) from exc
        if not isinstance(self.reason, str) or not self.reason or len(self.reason) > 64:
            raise ConfigError("a revocation's reason must be 1-64 characters")


class RevokedDevices:
    """The revoked devices, kept in a JSON file (``None``: in memory only); thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, Revocation] = {}
        if path is not None and path.exists():
            self._entries = {r.device: r for r in _read(path)}

    def __contains__(self, device: object) -> bool:
        with self._lock:
            return device in self._entries

    def reload(self) -> frozenset[str]:
        """Reread the file (another process may have revoked devices); the newly revoked ones."""
        if self.path is None or not self.path.exists():
            return frozenset()
        entries = {r.device: r for r in _read(self.path)}
        with self._lock:
            new = frozenset(entries) - frozenset(self._entries)
            self._entries.update(entries)
        return new

    def devices(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._entries)

    def get(self, device: str) -> Revocation | None:
        with self._lock:
            return self._entries.get(device)

    def add(self, device: str, reason: str, time_ms: int) -> Revocation:
        """Record a revocation (the first one of a device stays) and save the file."""
        entry = Revocation(device, reason, time_ms)
        with self._lock:
            entry = self._entries.setdefault(device, entry)
            if self.path is not None:
                doc = {"format": _FORMAT, "revoked": [
                    {"device": r.device, "reason": r.reason, "time_ms": r.time_ms}
                    for r in self._entries.values()]}
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(self.path, (json.dumps(doc, indent=2) + "\n").encode(), 0o600)
                except OSError as exc:
                    raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return entry


def _read(path: Path) -> list[Revocation]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read revoked devices {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("revoked"), list):
        raise ConfigError(f"{path}: expected {{\"format\": {_FORMAT}, \"revoked\": [...]}}")
    entries = []
    for i, item in enumerate(doc["revoked"]):
        if not isinstance(item, dict) or set(item) != {"device", "reason", "time_ms"}:
            raise ConfigError(f"{path} revoked[{i}]: expected keys device, reason, time_ms")
        entries.append(Revocation(item["device"], item["reason"], int(item["time_ms"])))
    return entries


class DeviceRevoker(Protocol):
    """What the PBFT quarantine and ``edge-broker revoke`` call, and where to hear of revocations."""

    def revoke_device(self, device_id: str, reason: str) -> Revocation: ...

    def on_revoked(self, listener: Callable[[Revocation], object]) -> None: ...


class RevocationEvents:
    """Listeners told about every revocation (after it took effect), plus its audit record."""

    def __init__(self, audit: AuditLog | None = None) -> None:
        self.audit = audit
        self._listeners: list[Callable[[Revocation], object]] = []

    def on_revoked(self, listener: Callable[[Revocation], object]) -> None:
        self._listeners.append(listener)

    def emit(self, entry: Revocation, detail: str = "") -> None:
        if self.audit is not None:
            self.audit.record(AuditKind.REVOCATION, entry.device, entry.reason, detail)
        for listener in list(self._listeners):
            try:
                listener(entry)
            except Exception:
                logger.exception("revocation listener %r failed for %s", listener, entry.device)


# -- editing the generated files in place ------------------------------------------------------


def _rewrite(path: Path, edit: Callable[[str], str]) -> bool:
    """Apply ``edit`` to a text file, keeping its mode and owner; whether anything changed.

    The owner matters: Mosquitto rereads the files on SIGHUP as the user it
    dropped to (``mosquitto``), after the operator's ``chown``.
    """
    try:
        text = path.read_text(encoding="utf-8")
        st = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    new = edit(text)
    if new == text:
        return False
    try:
        write_atomic(path, new.encode("utf-8"), st.st_mode & 0o777)
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            os.chown(path, st.st_uid, st.st_gid)
    except OSError as exc:
        raise ConfigError(f"cannot rewrite {path}: {exc.strerror or exc}") from exc
    return True


def drop_password_user(text: str, user: str) -> str:
    """A ``user:hash`` password file without ``user``'s line (Mosquitto's and amqtt's format)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if line.split(":", 1)[0].strip() != user or line.lstrip().startswith("#"))


def drop_acl_user(text: str, user: str) -> str:
    """A Mosquitto ACL file without ``user``'s block (its ``user`` line and the ``topic`` lines under it)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        words = line.split()
        if words[:1] == ["user"]:
            skipping = words[1:] == [user]
        elif words[:1] == ["pattern"]:
            skipping = False
        if not skipping or not words or words[0].startswith("#"):
            out.append(line)
    return "".join(out)


def drop_csv_device(text: str, device: str) -> str:
    """A ``device_id,password`` CSV without ``device``'s row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(io.StringIO(text)):
        if row and row[0].strip() == device:
            continue
        writer.writerow(row)
    return out.getvalue()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FileRevoker(RevocationEvents):
    """Revoke devices of a broker whose users live in files in ``directory``, then make it reload.

    For Mosquitto ``directory`` is the site written by ``edge-broker
    mosquitto-config`` (``passwd``, ``acl``); for ``edge-broker run --devices``
    it is the embedded broker's data directory (``amqtt-passwd``, no ACL file:
    :meth:`for_embedded`), which rereads ``revoked-devices.json`` on SIGHUP.
    ``pid`` (or ``pid_file``) names the running broker to send SIGHUP to;
    without either only the files change and the operator reloads the broker.
    """

    def __init__(self, directory: Path, *, pid: int | None = None, pid_file: Path | None = None,
                 audit: AuditLog | None = None, clock_ms: Callable[[], int] = _now_ms,
                 password_file: str | None = None, acl_file: str | None = "acl") -> None:
        super().__init__(audit)
        from broker.mosquitto_config import DEVICE_CREDENTIALS_FILE, PASSWORD_FILE

        self.site_dir = Path(directory)
        self.passwd = self.site_dir / (password_file or PASSWORD_FILE)
        self.acl = self.site_dir / acl_file if acl_file is not None else None
        self.credentials_csv = self.site_dir / DEVICE_CREDENTIALS_FILE
        self.revoked = RevokedDevices(self.site_dir / REVOKED_FILE)
        self.pid = pid
        self.pid_file = pid_file
        self._clock_ms = clock_ms

    @classmethod
    def for_embedded(cls, data_dir: Path, **kwargs: Any) -> FileRevoker:
        """A revoker for ``edge-broker run --devices --data-dir DATA_DIR``."""
        from broker.embedded import PASSWORD_FILE as AMQTT_PASSWORD_FILE

        return cls(data_dir, password_file=AMQTT_PASSWORD_FILE, acl_file=None, **kwargs)

    def _broker_pid(self) -> int | None:
        if self.pid is not None:
            return self.pid
        if self.pid_file is None:
            return None
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot read Mosquitto's pid from {self.pid_file}: {exc}") from exc

    def revoke_device(self, device_id: str, reason: str) -> Revocation:
        """Take ``device_id``'s login away now; returns the (first) revocation of it."""
        if not self.passwd.exists():
            raise ConfigError(f"{self.passwd} does not exist: is {self.site_dir} a site written by "
                              "edge-broker mosquitto-config (or the data directory of edge-broker run)?")
        entry = self.revoked.add(device_id, reason, self._clock_ms())
        removed = _rewrite(self.passwd, lambda text: drop_password_user(text, device_id))
        if self.acl is not None:
            _rewrite(self.acl, lambda text: drop_acl_user(text, device_id))
        _rewrite(self.credentials_csv, lambda text: drop_csv_device(text, device_id))
        pid = self._broker_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGHUP)
            except OSError as exc:
                raise BrokerError(f"cannot signal Mosquitto (pid {pid}) to reload: "
                                  f"{exc.strerror or exc}") from exc
        logger.info("revoked %s (%s)%s%s", device_id, reason, "" if removed else ": it had no password line",
                    f"; broker {pid} reloads" if pid is not None else "; reload the broker (SIGHUP)")
        self.emit(entry, f"broker pid {pid} reloads" if pid is not None else "files only, no reload sent")
        return entry

