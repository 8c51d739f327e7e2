"""The coordination wire format and the SQLite Raft storage, without a broker."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from broker.coordination.storage import RaftStorage
from protocols.coordination.wire import (
    AdminReplyMsg,
    AdminRequest,
    ClientReplyMsg,
    ClientRequest,
    LockEventMsg,
    MessageBatch,
    decode,
    encode,
)
from protocols.raft import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    PersistentState,
    Ready,
    Snapshot,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from schemas.errors import CodecError, StorageError, UnsupportedVersion
from schemas.messages import DEFAULT_CODEC

SNAP = Snapshot(5, 2, ("a", "b", "c"), b"state", (("c1", 3, b"r"),))
ENTRIES = (Entry(2, 6, EntryKind.COMMAND, b"x", "c1", 4), Entry(2, 7, EntryKind.CONFIG, members=("a", "b")))


@pytest.mark.parametrize("obj", [
    VoteRequest("a", "b", 3, 10, 2, pre_vote=True), VoteResponse("b", "a", 3, True, True),
    AppendRequest("a", "b", 3, 5, 2, ENTRIES, 6), AppendResponse("b", "a", 3, False, 0, 7, 6, 2),
    SnapshotRequest("a", "b", 3, SNAP), TimeoutNow("a", "b", 3),
    ClientRequest("c1", 9, "lock", b"\x01"), ClientReplyMsg(9, 12, "a", b"ok"),
    LockEventMsg("granted", "cam/ptz", 4, 1000),
    AdminRequest("op1", 5, "add", "n4"), AdminRequest("op1", 6, "members"),
    AdminReplyMsg(5, "ok", "n1", "committed", ("n1", "n2", "n3", "n4")), AdminReplyMsg(6, "not_leader", ""),
    MessageBatch((AppendRequest("a", "b", 3, 5, 2, ENTRIES, 6), AppendRequest("a", "b", 3, 7, 2, (), 7),
                  TimeoutNow("a", "b", 3))),
])
def test_round_trip(obj: object) -> None:
    assert decode(encode(obj)) == obj  # type: ignore[arg-type]


def test_unknown_version_and_garbage_are_refused() -> None:
    with pytest.raises(UnsupportedVersion):
        decode(DEFAULT_CODEC.encode([2, "timeout_now", "a", "b", 1]))
    with pytest.raises(CodecError):
        decode(DEFAULT_CODEC.encode([1, "nope"]))
    with pytest.raises(CodecError):
        decode(DEFAULT_CODEC.encode([1, "vote", "too", "few"]))
    with pytest.raises(CodecError):
        decode(msgpack.packb([1]))
    with pytest.raises(CodecError):  # only the known admin actions
        decode(DEFAULT_CODEC.encode([1, "admin", "c1", 1, "format-disk", ""]))
    with pytest.raises(CodecError):  # a batch carries Raft messages only
        decode(DEFAULT_CODEC.encode([1, "batch", [["req", "c1", 1, "lock", b""]]]))


def reload(path: Path) -> PersistentState:
    """What a restarted node reads (the log is exclusive: the reader lets go at once)."""
    store = RaftStorage(path)
    try:
        return store.load()
    finally:
        store.close()


def test_storage_follows_the_ready_contract_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    store = RaftStorage(path)
    e = [Entry(1, i) for i in range(1, 6)]
    store.persist(Ready(hard_state=HardState(1, "a", 3), entries=tuple(e)))
    store.persist(Ready(entries=(Entry(2, 4), Entry(2, 5), Entry(2, 6))))  # replaces from index 4 on
    store.close()
    loaded = reload(path)
    assert loaded.hard_state == HardState(1, "a", 3)
    assert [(x.term, x.index) for x in loaded.entries] == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    store = RaftStorage(path)
    store.persist(Ready(snapshot=SNAP, entries=ENTRIES, hard_state=HardState(2, None, 6)))
    loaded = store.load()
    assert loaded.snapshot == SNAP and loaded.entries == ENTRIES
    assert loaded.hard_state == HardState(2, None, 6)


def test_storage_fsyncs_only_what_the_ready_says_must_be_synced(tmp_path: Path) -> None:
    """The node decides (``Ready.must_sync``, etcd's MustSync); storage skips the fsync when told to."""
    path = tmp_path / "raft.db"
    store = RaftStorage(path)
    store.load()
    store.persist(Ready(hard_state=HardState(1, "a", 0), entries=(Entry(1, 1), Entry(1, 2))))
    store.persist(Ready(hard_state=HardState(1, "a", 2), must_sync=False))  # commit only
    store.persist(Ready(hard_state=HardState(2, None, 2)))  # new term: synced
    store.persist(Ready(hard_state=HardState(2, "b", 2)))  # new vote: synced
    store.persist(Ready(hard_state=HardState(2, "b", 2), entries=(Entry(2, 3),)))  # entries: synced
    assert (store.fsyncs, store.unsynced_commits) == (4, 1)
    store.close()
    loaded = reload(path)
    assert loaded.hard_state == HardState(2, "b", 2) and len(loaded.entries) == 3


def test_a_second_node_on_the_same_log_is_refused(tmp_path: Path) -> None:
    """Two processes appending to one node's log would break every guarantee: the log is exclusive."""
    path = tmp_path / "raft.db"
    first = RaftStorage(path)
    first.load()
    first.persist(Ready(hard_state=HardState(1, "a", 0), entries=(Entry(1, 1),)))
    with pytest.raises(StorageError, match="locked"):
        RaftStorage(path).load()
    first.close()
    assert reload(path).hard_state == HardState(1, "a", 0)
