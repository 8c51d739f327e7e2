"""Commands of the replicated lock service and their one binary encoding.

A client sends a command to the Raft leader; the leader stamps it with its
logical time (``now_ms``) and appends the stamped entry to the log. Every
replica applies the same committed entries in the same order, so the time must
travel inside the entry: replicas never read a clock.

Wire form (msgpack, so another language can decode it)::

    command: [1, kind, field, ...]          # 1 = format version
    entry:   [1, now_ms, [kind, field, ...]]             # no requester (before lanes)
    entry:   [2, now_ms, [kind, field, ...], requester]  # the requester's identity

The requester is who sent the command as the broker saw it (the lane of the
request topic, see :mod:`protocols.coordination.topics`), never a payload
field: the state machine binds a session to the identity that opened it and
refuses every later command for it from anyone else, so a session id is not
a bearer secret.

Field order per kind is fixed by ``_FIELDS`` below. Commands are frozen and
validate themselves, so a decoded command is a valid one; a payload that is not
one of these shapes is refused with :class:`LockCodecError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from schemas.errors import LockCodecError, LockError, UnsupportedVersion

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_TTL_MS",
    "Acquire",
    "CancelWait",
    "CloseSession",
    "Command",
    "Expire",
    "KeepAlive",
    "OpenSession",
    "Release",
    "decode_command",
    "decode_entry",
    "decode_stamped",
    "encode_command",
    "encode_entry",
]

FORMAT_VERSION = 1
ENTRY_VERSION_WITH_REQUESTER = 2
MAX_NAME_BYTES = 256
# A lease longer than a week is a configuration mistake, not a lease.
MAX_TTL_MS = 7 * 24 * 3600 * 1000
_INT32 = 2**31
_UINT63 = 2**63 - 1


def check_name(what: str, value: object) -> str:
    """A session id or lock name: non-empty text of at most ``MAX_NAME_BYTES`` UTF-8 bytes."""
    if not isinstance(value, str) or not value:
        raise LockError(f"{what} must be a non-empty string, got {value!r}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES or "\x00" in value:
        raise LockError(f"{what} must be at most {MAX_NAME_BYTES} bytes without NUL: {value[:40]!r}")
    return value


def check_int(what: str, value: object, lo: int, hi: int) -> int:
    """An int (not a bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise LockError(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open a session whose lease lasts ``ttl_ms`` past each keepalive; locks live and die with it."""

    KIND: ClassVar[str] = "open"
    session_id: str
    ttl_ms: int

    def __post_init__(self) -> None:
        check_name("session_id", self.session_id)
        check_int("ttl_ms", self.ttl_ms, 1, MAX_TTL_MS)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Extend the session's lease to ``now + ttl``; this is how every lock it holds is renewed."""

    KIND: ClassVar[str] = "keepalive"
    session_id: str

    def __post_init__(self) -> None:
        check_name("session_id", self.session_id)


@dataclass(frozen=True, slots=True)
class CloseSession:
    """End the session: release what it holds, cancel what it waits for."""

    KIND: ClassVar[str] = "close"
    session_id: str

    def __post_init__(self) -> None:
        check_name("session_id", self.session_id)


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take ``lock_name`` or, with ``wait``, queue for it (FIFO).

    ``priority`` only matters when a deadlock must be broken: the lowest
    priority member of the cycle is the victim.
    """

    KIND: ClassVar[str] = "acquire"
    session_id: str
    lock_name: str
    priority: int = 0
    wait: bool = True

    def __post_init__(self) -> None:
        check_name("session_id", self.session_id)
        check_name("lock_name", self.lock_name)
        check_int("priority", self.priority, -_INT32, _INT32 - 1)
        if not isinstance(self.wait, bool):
            raise LockError(f"wait must be a bool, got {self.wait!r}")


@dataclass(frozen=True, slots=True)
class Release:
    """Give up ``lock_name``; ``token`` must be the current grant's, so a stale holder cannot release."""

    KIND: ClassVar[str] = "release"
    session_id: str
    lock_name: str
    token: int

    def __post_init__(self) -> None:
        check_name("session_id", self.session_id)
        check_name("lock_name", self.lock_name)
        check_int("token", self.token, 1, _UINT63)


@dataclass(frozen=True, slots=True)
class CancelWait:
    """Stop waiting for ``lock_name`` (a client whose acquire timed out)."""

    KIND: ClassVar[str] = "cancel"
    session_id: str
    lock_name: str

    def __post_init__(self) -> None:
        check_name("session_id", self.session_id)
        check_name("lock_name", self.lock_name)


@dataclass(frozen=True, slots=True)
class Expire:
    """The leader's periodic tick: only advances time, so lapsed leases are reaped without traffic."""

    KIND: ClassVar[str] = "expire"


Command = OpenSession | KeepAlive | CloseSession | Acquire | Release | CancelWait | Expire

_CLASSES: dict[str, type[Any]] = {
    cls.KIND: cls for cls in (OpenSession, KeepAlive, CloseSession, Acquire, Release, CancelWait, Expire)
}
_FIELDS: dict[str, tuple[str, ...]] = {
    "open": ("session_id", "ttl_ms"),
    "keepalive": ("session_id",),
    "close": ("session_id",),
    "acquire": ("session_id", "lock_name", "priority", "wait"),
    "release": ("session_id", "lock_name", "token"),
    "cancel": ("session_id", "lock_name"),
    "expire": (),
}


def _to_list(command: Command) -> list[Any]:
    return [command.KIND, *(getattr(command, name) for name in _FIELDS[command.KIND])]


def _from_list(body: object) -> Command:
    if not isinstance(body, list) or not body or not isinstance(body[0], str):
        raise LockCodecError(f"a lock command must be [kind, fields...], got {body!r:.80}")
    kind, *values = body
    fields = _FIELDS.get(kind)
    if fields is None:
        raise LockCodecError(f"unknown lock command kind {kind!r}")
    if len(values) != len(fields):
        raise LockCodecError(f"lock command {kind!r} needs {len(fields)} fields, got {len(values)}")
    try:
        command: Command = _CLASSES[kind](**dict(zip(fields, values, strict=True)))
    except LockError as exc:
        raise LockCodecError(f"invalid {kind!r} command: {exc}") from exc
    return command


def _unpack(data: bytes, what: str, versions: tuple[int, ...] = (FORMAT_VERSION,)) -> list[Any]:
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise LockCodecError(f"{what} is not valid msgpack: {exc}") from exc
    if not isinstance(body, list) or not body or isinstance(body[0], bool) or not isinstance(body[0], int):
        raise LockCodecError(f"{what} must be a msgpack array starting with a format version")
    if body[0] not in versions:
        raise UnsupportedVersion(f"{what} format {body[0]} is not supported (this build reads "
                                 f"{', '.join(map(str, versions))})")
    return body


def encode_command(command: Command) -> bytes:
    """The command as sent by a client to the leader (no time: the leader stamps it)."""
    return msgpack.packb([FORMAT_VERSION, *_to_list(command)], use_bin_type=True)


def decode_command(data: bytes) -> Command:
    """Inverse of :func:`encode_command`; raises :class:`LockCodecError` on anything else."""
    return _from_list(_unpack(data, "lock command")[1:])


def encode_entry(now_ms: int, command: Command, requester: str = "") -> bytes:
    """A log entry: the command with the leader's logical time and the requester's identity.

    An empty ``requester`` writes the format without one (format 1), as
    entries were written before lanes; the state machine then treats the
    requester as the empty identity.
    """
    check_int("now_ms", now_ms, 0, _UINT63)
    if not isinstance(requester, str) or len(requester) > MAX_NAME_BYTES:
        raise LockError(f"requester must be a string of at most {MAX_NAME_BYTES} characters")
    if requester:
        return msgpack.packb([ENTRY_VERSION_WITH_REQUESTER, now_ms, _to_list(command), requester],
                             use_bin_type=True)
    return msgpack.packb([FORMAT_VERSION, now_ms, _to_list(command)], use_bin_type=True)


def decode_stamped(data: bytes) -> tuple[int, Command, str]:
    """Inverse of :func:`encode_entry`: ``(now_ms, command, requester)``."""
    body = _unpack(data, "lock log entry", (FORMAT_VERSION, ENTRY_VERSION_WITH_REQUESTER))
    size = 3 if body[0] == FORMAT_VERSION else 4
    if len(body) != size:
        raise LockCodecError(f"a format {body[0]} lock log entry must have {size} parts")
    try:
        now_ms = check_int("now_ms", body[1], 0, _UINT63)
    except LockError as exc:
        raise LockCodecError(str(exc)) from exc
    requester = body[3] if size == 4 else ""
    if not isinstance(requester, str) or len(requester) > MAX_NAME_BYTES:
        raise LockCodecError("the requester of a lock log entry must be a short string")
    return now_ms, _from_list(body[2]), requester


def decode_entry(data: bytes) -> tuple[int, Command]:
    """``(now_ms, command)`` of a log entry (the requester dropped; see :func:`decode_stamped`)."""
    now_ms, command, _requester = decode_stamped(data)
    return now_ms, command
