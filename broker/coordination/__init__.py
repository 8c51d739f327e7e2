"""The MQTT driver for the pure coordination protocols: Raft groups and the lock service on top.

* :class:`RaftDriver` runs one :class:`protocols.raft.RaftNode` against the
  broker, the wall clock and a SQLite log (:class:`RaftStorage`).
* :class:`LockClient` is the client side of the replicated lock table
  (``async with client.lock("camera-7/ptz") as token:``); :class:`RaftClient`
  is the generic request/reply client (and the append register the fault tests use),
  and the operator's: add or remove a member, transfer leadership.

The wire format, the topic layout and the replicated state machine are pure and
live in :mod:`protocols.coordination`.
"""

from broker.coordination.client import RaftClient
from broker.coordination.driver import DriverConfig, RaftDriver
from broker.coordination.lock_client import LockClient
from broker.coordination.storage import RaftStorage

__all__ = [
    "DriverConfig",
    "LockClient",
    "RaftClient",
    "RaftDriver",
    "RaftStorage",
]
