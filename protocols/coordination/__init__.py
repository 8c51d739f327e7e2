"""What every coordination group on the bus shares, with no I/O: wire format, topics, replicated state.

* :mod:`~protocols.coordination.wire`: the one msgpack-in-envelope format of
  ``{root}/_sys/{protocol}/{group}/...`` traffic (Raft messages, client
  requests and replies, lock events, membership requests);
* :mod:`~protocols.coordination.topics`: where one group's traffic lives
  (:class:`CoordinationTopics`);
* :mod:`~protocols.coordination.group_state`: the state machine a Raft group
  replicates (the lock table plus an append register);
* :mod:`~protocols.coordination.lock_events`: which lock events the leader tells
  clients about.

The MQTT binding (driver, SQLite log, clients) is :mod:`broker.coordination`.
"""

from protocols.coordination.group_state import GroupStateMachine
from protocols.coordination.topics import CoordinationTopics
from protocols.coordination.wire import (
    WIRE_VERSION,
    AdminReplyMsg,
    AdminRequest,
    ClientReplyMsg,
    ClientRequest,
    LockEventMsg,
    decode,
    encode,
)

__all__ = [
    "WIRE_VERSION",
    "AdminReplyMsg",
    "AdminRequest",
    "ClientReplyMsg",
    "ClientRequest",
    "CoordinationTopics",
    "GroupStateMachine",
    "LockEventMsg",
    "decode",
    "encode",
]
