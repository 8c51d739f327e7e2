"""Locks for the fleet: a Raft-replicated lock table, fencing, and a peer-to-peer mode.

* :class:`LockStateMachine` is the lock table that runs on top of a Raft log:
  sessions with leases, FIFO waiters, fencing tokens that only grow, and a
  wait-for graph that finds and breaks deadlocks as they form.
* :class:`FencedResource` is what a protected resource uses to refuse writes
  from a holder whose lease lapsed while it was paused.
* :mod:`protocols.locks.ricart_agrawala` is a coordinator-free mode for small
  groups, with weaker guarantees (see its docstring).
"""

from protocols.locks.commands import (
    Acquire,
    CancelWait,
    CloseSession,
    Command,
    Expire,
    KeepAlive,
    OpenSession,
    Release,
    decode_command,
    decode_entry,
    decode_stamped,
    encode_command,
    encode_entry,
)
from protocols.locks.fencing import FencedResource
from protocols.locks.results import (
    CancelReason,
    DeadlockEvent,
    Granted,
    LockEvent,
    LockResult,
    LockStatus,
    Released,
    ReleaseReason,
    SessionExpired,
    WaitCancelled,
)
from protocols.locks.state_machine import LockStateMachine
from protocols.locks.waitfor import WaitEdge

__all__ = [
    "Acquire",
    "CancelReason",
    "CancelWait",
    "CloseSession",
    "Command",
    "DeadlockEvent",
    "Expire",
    "FencedResource",
    "Granted",
    "KeepAlive",
    "LockEvent",
    "LockResult",
    "LockStateMachine",
    "LockStatus",
    "OpenSession",
    "Release",
    "ReleaseReason",
    "Released",
    "SessionExpired",
    "WaitCancelled",
    "WaitEdge",
    "decode_command",
    "decode_entry",
    "decode_stamped",
    "encode_command",
    "encode_entry",
]
