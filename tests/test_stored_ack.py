"""The stored acknowledgement: its codec, the outbox's release and eviction, the coordinator's publisher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.outbox import Outbox, OutboxMessage, SequenceSpan
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from coordinator.stored_acks import StoredAckPublisher
from schemas.errors import CodecError, UnsupportedVersion
from schemas.sequence import DeviceSequence
from schemas.stored_ack import MAX_RANGES, StoredAck, StreamAck

EPOCH = 1_764_000_000_000


def batch(first: int, count: int = 10, stream: str = "metrics", epoch: int = EPOCH) -> OutboxMessage:
    return OutboxMessage("edgebus/gw/metrics", b"x" * 20, span=SequenceSpan(stream, epoch, first, count))


# -- the record --------------------------------------------------------------


def test_round_trip_and_unknown_keys_ignored() -> None:
    ack = StoredAck({"metrics": StreamAck(EPOCH, ((0, 100),)), "detections/door": StreamAck(3, ())})
    assert StoredAck.decode(ack.encode()) == ack
    body = json.loads(ack.encode())
    body["later"] = 1
    body["streams"]["metrics"]["extra"] = "x"
    assert StoredAck.decode(json.dumps(body).encode()) == ack


@pytest.mark.parametrize("payload, error", [
    (b"not json", CodecError),
    (b"[]", CodecError),
    (b'{"v": 2, "streams": {}}', UnsupportedVersion),
    (b'{"v": 1}', CodecError),
    (b'{"v": 1, "streams": {"metrics": {"epoch": -1, "stored": []}}}', CodecError),
    (b'{"v": 1, "streams": {"metrics": {"epoch": 1, "stored": [[5, 3]]}}}', CodecError),
    (b'{"v": 1, "streams": {"metrics": {"epoch": 1, "stored": [[0, 5], [4, 9]]}}}', CodecError),
    (b'{"v": 1, "streams": {"metrics": {"epoch": 1, "stored": [[0, 1.5]]}}}', CodecError),
    (b'{"v": 1, "streams": {"metrics": {"epoch": true, "stored": []}}}', CodecError),
])
def test_malformed_acks_are_refused(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        StoredAck.decode(payload)


def test_too_many_ranges_refused_and_newest_kept() -> None:
    ranges = [[i * 2, i * 2 + 1] for i in range(MAX_RANGES + 5)]
    newest = StreamAck.newest(1, ranges)
    assert len(newest.stored) == MAX_RANGES and newest.stored[-1] == tuple(ranges[-1])
    body = {"v": 1, "streams": {"metrics": {"epoch": 1, "stored": ranges}}}
    with pytest.raises(CodecError, match="ranges"):
        StoredAck.decode(json.dumps(body).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 20)), max_size=12),
       st.integers(0, 250), st.integers(1, 30))
def test_covers_is_set_containment(spans: list[tuple[int, int]], first: int, count: int) -> None:
    state = DeviceSequence(epoch=5)
    for lo, n in spans:
        state.add_range(lo, n)
    ack = StreamAck.newest(5, state.ranges)
    seen = {s for lo, hi in state.ranges for s in range(lo, hi)}
    assert ack.covers(5, first, count) == set(range(first, first + count)).issubset(seen)
    assert ack.covers(4, first, count)  # an older epoch: the receiver takes none of it any more
    assert not ack.covers(6, first, count)


# -- the outbox --------------------------------------------------------------


def test_release_removes_only_covered_rows(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    ids = [box.put(batch(i * 10)) for i in range(5)]
    plain = box.put(OutboxMessage("edgebus/gw/state/x", b"s"))
    cam = box.put(batch(0, 3, stream="detections/door"))
    released = box.release(StoredAck({"metrics": StreamAck(EPOCH, ((0, 20), (30, 45)))}))
    assert released == [ids[0], ids[1], ids[3]]  # [40, 50) only half covered: kept
    assert [r.id for r in box.peek()] == [ids[2], ids[4], plain, cam]
    assert box.awaiting() == 3 and box.released == 3
    assert box.release(StoredAck({"detections/door": StreamAck(EPOCH + 1, ())})) == [cam]  # epoch moved on
    box.close()
    again = Outbox(tmp_path / "o.db")  # the spans survive a restart
    assert again.awaiting() == 2
    assert again.release(StoredAck({"metrics": StreamAck(EPOCH, ((0, 100),))})) == [ids[2], ids[4]]
    assert [r.id for r in again.peek()] == [plain]


def test_rolled_back_put_is_not_indexed(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    with pytest.raises(RuntimeError), box.transaction() as tx:
        tx.put(batch(0))
        raise RuntimeError("abort")
    assert len(box) == 0 and box.awaiting() == 0


def test_full_outbox_evicts_delivered_rows_first_and_counts_them(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_messages=4)
    ids = [box.put(batch(i * 10)) for i in range(4)]
    assert box.put(batch(40)) is None and box.dropped == 1  # nothing delivered yet: refuse the new one
    box.mark_delivered([i for i in ids[:2] if i is not None])
    assert box.put(batch(40)) is not None  # gives up the oldest delivered row instead
    assert box.evicted == 1 and box.dropped == 1 and len(box) == 4
    assert [r.message.span.first_seq for r in box.peek() if r.message.span] == [10, 20, 30, 40]
    assert box.awaiting() == 4


def test_row_keeps_its_span() -> None:
    box = Outbox()
    row_id = box.put(batch(7, 3))
    assert row_id is not None
    [row] = box.rows([row_id, 999])
    assert row.message.span == SequenceSpan("metrics", EPOCH, 7, 3)


# -- the session's modes -----------------------------------------------------


def test_auto_mode_remembers_a_seen_ack(tmp_path: Path) -> None:
    config = BusConfig(device="gw", outbox_path=tmp_path / "o.db")
    session = BusSession(config)
    assert not session.waits_for_coordinator
    session._on_stored_ack(ReceivedMessage("edgebus/gw/cmd/stored", b"garbage", 1, False))
    assert not session.waits_for_coordinator and session.stats().bad_stored_acks == 1
    session._on_stored_ack(ReceivedMessage("edgebus/gw/cmd/stored", StoredAck().encode(), 1, True))
    assert session.waits_for_coordinator
    session.outbox.close()
    assert BusSession(config).waits_for_coordinator  # remembered in the outbox
    assert BusSession(BusConfig(device="gw", end_to_end_ack="required")).waits_for_coordinator
    off = BusSession(BusConfig(device="gw", end_to_end_ack="off", outbox_path=tmp_path / "o.db"))
    assert not off.waits_for_coordinator and not off.router.routes()


# -- the coordinator's publisher --------------------------------------------


def test_publisher_throttles_per_device_and_never_acks_a_blocked_stream() -> None:
    now = [100.0]
    session = BusSession(BusConfig(clean_start=True))
    acks = StoredAckPublisher(session, interval=0.5, clock=lambda: now[0])
    acks.restore({"gw": DeviceSequence(EPOCH, [[0, 10]])})
    assert not acks.pending
    acks.committed({"gw": DeviceSequence(EPOCH, [[0, 20]]), "gw/door": DeviceSequence(EPOCH, [[0, 4]]),
                    "cam-2": DeviceSequence(9, [[0, 1]])})
    assert acks.publish_due() == 2
    acks.committed({"gw": DeviceSequence(EPOCH, [[0, 30]])})
    assert acks.publish_due() == 0 and acks.pending  # within the interval: waits
    now[0] += 0.5
    acks.block(["gw/door"])
    assert acks.publish_due() == 1
    rows = session.outbox.peek()
    topics = [r.message.topic for r in rows]
    assert sorted(topics[:2]) == ["edgebus/cam-2/cmd/stored", "edgebus/gw/cmd/stored"]
    assert topics[2] == "edgebus/gw/cmd/stored"
    assert all(r.message.retain and r.message.qos == 1 for r in rows)
    first = StoredAck.decode(rows[topics.index("edgebus/gw/cmd/stored")].message.payload)
    last = StoredAck.decode(rows[2].message.payload)
    assert first.streams["detections/door"] == StreamAck(EPOCH, ((0, 4),))
    assert dict(last.streams) == {"metrics": StreamAck(EPOCH, ((0, 30),))}
    acks.committed({"gw/door": DeviceSequence(EPOCH, [[0, 9]])})
    assert not acks.pending  # blocked: not even queued
