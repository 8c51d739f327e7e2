"""The state machine one Raft group replicates: the lock table plus an append register.

A log entry is ``msgpack([1, op, body])``: ``lock`` (body: a lock entry from
:func:`protocols.locks.encode_entry`, already stamped with the leader's time),
``append`` (body: bytes appended to the register; the result is the new
length, so a client learns its slot) or ``read`` (the whole register, read
through the log so it is linearizable). The register exists so fault tests can
check that no acknowledged entry is ever lost.
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocols.locks import Granted, LockEvent, LockResult, LockStateMachine, LockStatus, decode_entry
from schemas.errors import CodecError, UnsupportedVersion

__all__ = ["ENTRY_VERSION", "GroupStateMachine", "decode_lock_result", "encode_op", "encode_lock_result"]

ENTRY_VERSION = 1


def encode_op(op: str, body: bytes = b"") -> bytes:
    """A log entry command (see the module docstring)."""
    return msgpack.packb([ENTRY_VERSION, op, body], use_bin_type=True)


def encode_lock_result(r: LockResult) -> bytes:
    return msgpack.packb([ENTRY_VERSION, r.status.value, r.now_ms, r.token, r.lease_deadline_ms])


def decode_lock_result(data: bytes) -> LockResult:
    """What a client gets back for a lock command (events are not sent with it)."""
    try:
        version, status, now_ms, token, deadline = msgpack.unpackb(data)
    except (ValueError, TypeError) as exc:
        raise CodecError(f"malformed lock result: {exc}") from exc
    if version != ENTRY_VERSION:
        raise UnsupportedVersion(f"lock result version {version} is not supported")
    return LockResult(LockStatus(status), now_ms, token, deadline)


class GroupStateMachine:
    """Deterministic; satisfies :class:`protocols.raft.StateMachine`. Events wait in :meth:`drain_events`."""

    def __init__(self) -> None:
        self.locks = LockStateMachine()
        self.register: list[bytes] = []
        self._events: list[LockEvent] = []

    def apply(self, command: bytes) -> bytes:
        try:
            version, op, body = msgpack.unpackb(command)
        except (ValueError, TypeError) as exc:
            return msgpack.packb([ENTRY_VERSION, "error", f"malformed entry: {exc}"])
        if version != ENTRY_VERSION:
            return msgpack.packb([ENTRY_VERSION, "error", f"entry version {version} unknown"])
        if op == "lock":
            now_ms, cmd = decode_entry(body)
            result = self.locks.apply(cmd, now_ms)
            sender = getattr(cmd, "session_id", None)
            # The sender of a granted acquire hears it in its reply; only others need an event.
            self._events.extend(e for e in result.events if not (
                isinstance(e, Granted) and e.session_id == sender and result.status is LockStatus.GRANTED))
            return encode_lock_result(result)
        if op == "append":
            self.register.append(bytes(body))
            return msgpack.packb([ENTRY_VERSION, "ok", len(self.register)])
        if op == "read":
            return msgpack.packb([ENTRY_VERSION, "ok", self.register], use_bin_type=True)
        return msgpack.packb([ENTRY_VERSION, "error", f"unknown op {op!r}"])

    def drain_events(self) -> list[LockEvent]:
        """Lock events produced since the last call (the leader publishes them, followers drop them)."""
        events, self._events = self._events, []
        return events

    def snapshot(self) -> bytes:
        return msgpack.packb([ENTRY_VERSION, self.locks.snapshot(), self.register], use_bin_type=True)

    def restore(self, data: bytes) -> None:
        body: Any = msgpack.unpackb(data)
        if body[0] != ENTRY_VERSION:
            raise UnsupportedVersion(f"group snapshot version {body[0]} is not supported")
        self.locks.restore(body[1])
        self.register = [bytes(x) for x in body[2]]
        self._events = []
