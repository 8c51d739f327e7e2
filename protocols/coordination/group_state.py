"""The state machine one Raft group replicates: the lock table, the transaction table, an append register.

A log entry is ``msgpack([1, op, body])``: ``lock`` (body: a lock entry from
:func:`protocols.locks.encode_entry`, already stamped with the leader's time),
``tx`` (body: a two-phase commit entry from :func:`protocols.twopc.encode_entry`,
stamped the same way; the decision log of every transaction the group manages),
``append`` (body: bytes appended to the register; the result is the new
length, so a client learns its slot) or ``read`` (the whole register, read
through the log so it is linearizable). The register exists so fault tests can
check that no acknowledged entry is ever lost.
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocols.locks import Granted, LockEvent, LockResult, LockStateMachine, LockStatus, decode_stamped
from protocols.twopc.table import TxResult, TxTable, encode_result
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
        self.tx = TxTable()
        self.register: list[bytes] = []
        self._events: list[LockEvent] = []
        self._tx_results: list[TxResult] = []

    def apply(self, command: bytes) -> bytes:
        try:
            version, op, body = msgpack.unpackb(command)
        except (ValueError, TypeError) as exc:
            return msgpack.packb([ENTRY_VERSION, "error", f"malformed entry: {exc}"])
        if version != ENTRY_VERSION:
            return msgpack.packb([ENTRY_VERSION, "error", f"entry version {version} unknown"])
        if op == "lock":
            now_ms, cmd, requester = decode_stamped(body)
            result = self.locks.apply(cmd, now_ms, requester)
            sender = getattr(cmd, "session_id", None)
            # The sender of a granted acquire hears it in its reply; only others need an event.
            self._events.extend(e for e in result.events if not (
                isinstance(e, Granted) and e.session_id == sender and result.status is LockStatus.GRANTED))
            return encode_lock_result(result)
        if op == "tx":
            tx_result = self.tx.apply_entry(bytes(body))
            self._tx_results.append(tx_result)
            return encode_result(tx_result)
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

    def drain_tx_results(self) -> list[TxResult]:
        """Results of the transaction entries applied since the last call, in log order (for the
        node's :class:`~protocols.twopc.TxManager`, on every node)."""
        results, self._tx_results = self._tx_results, []
        return results

    def snapshot(self) -> bytes:
        return msgpack.packb([ENTRY_VERSION, self.locks.snapshot(), self.register, self.tx.snapshot()],
                             use_bin_type=True)

    def restore(self, data: bytes) -> None:
        body: Any = msgpack.unpackb(data)
        if body[0] != ENTRY_VERSION:
            raise UnsupportedVersion(f"group snapshot version {body[0]} is not supported")
        self.locks.restore(body[1])
        self.register = [bytes(x) for x in body[2]]
        if len(body) > 3:  # snapshots written before the transaction table have three parts
            self.tx.restore(bytes(body[3]))
        else:
            self.tx.restore(TxTable(self.tx.tombstone_ms).snapshot())  # in place: the manager holds it
        self._events = []
        self._tx_results = []
