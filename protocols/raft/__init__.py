"""Raft as a pure state machine: ``RaftNode`` plus its messages and effects.

    node = RaftNode("a", ["a", "b", "c"], state_machine, rng)
    node.tick(); node.step(message); node.propose(b"cmd", "client-1", 7)
    rd = node.ready()   # send rd.early_messages; persist rd.snapshot/entries/hard_state;
    node.advance(rd)    # THEN send rd.messages (see protocols.raft.ready for the whole rule)
"""

from protocols.raft.config import RaftConfig, RandomSource, StateMachine
from protocols.raft.log import RaftLog
from protocols.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Message,
    PersistentState,
    Snapshot,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from protocols.raft.node import RaftNode, Role
from protocols.raft.ready import (
    Accepted,
    AppliedEntry,
    BecameLeader,
    ClientReply,
    Event,
    LeaderChanged,
    MembersChanged,
    NotLeader,
    ProposeResult,
    Ready,
    Rejected,
)
from protocols.raft.status import RaftStatus

__all__ = [
    "Accepted",
    "AppendRequest",
    "AppendResponse",
    "AppliedEntry",
    "BecameLeader",
    "ClientReply",
    "Entry",
    "EntryKind",
    "Event",
    "HardState",
    "LeaderChanged",
    "MembersChanged",
    "Message",
    "NotLeader",
    "PersistentState",
    "ProposeResult",
    "RaftConfig",
    "RaftLog",
    "RaftNode",
    "RaftStatus",
    "RandomSource",
    "Ready",
    "Rejected",
    "Role",
    "Snapshot",
    "SnapshotRequest",
    "StateMachine",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
]
