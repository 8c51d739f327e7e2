"""Unit tests of the replicated lock table: sessions, grants, FIFO, fencing, expiry, deadlocks, snapshots."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest

from protocols.locks import (
    Acquire,
    CancelReason,
    CancelWait,
    CloseSession,
    Command,
    DeadlockEvent,
    Expire,
    FencedResource,
    Granted,
    KeepAlive,
    LockResult,
    LockStateMachine,
    LockStatus,
    OpenSession,
    Release,
    Released,
    ReleaseReason,
    SessionExpired,
    WaitCancelled,
    decode_command,
    decode_entry,
    encode_command,
    encode_entry,
)
from schemas.errors import EdgebusError, LockCodecError, LockError, StaleTokenError, UnsupportedVersion


def machine_with(*sessions: tuple[str, int], now: int = 0) -> LockStateMachine:
    m = LockStateMachine()
    for sid, ttl in sessions:
        assert m.apply(OpenSession(sid, ttl), now).status == LockStatus.OK
    return m


def grants(result: LockResult) -> list[tuple[str, str, int]]:
    return [(e.session_id, e.lock_name, e.token) for e in result.events if isinstance(e, Granted)]


# ---- sessions ------------------------------------------------------------------------------------


def test_session_lifecycle() -> None:
    m = LockStateMachine()
    opened = m.apply(OpenSession("a", 100), 10)
    assert (opened.status, opened.lease_deadline_ms) == (LockStatus.OK, 110)
    assert m.apply(OpenSession("a", 100), 20).status == LockStatus.SESSION_EXISTS
    kept = m.apply(KeepAlive("a"), 50)
    assert kept.lease_deadline_ms == 150 == m.lease_deadline("a")
    assert m.apply(CloseSession("a"), 60).status == LockStatus.OK
    assert m.apply(KeepAlive("a"), 61).status == LockStatus.NO_SESSION
    assert m.apply(Acquire("ghost", "x"), 62).status == LockStatus.NO_SESSION


def test_lease_lapses_exactly_at_its_deadline_and_is_gone_for_good() -> None:
    m = machine_with(("a", 100))
    assert m.apply(KeepAlive("a"), 99).lease_deadline_ms == 199  # one ms before: still alive
    result = m.apply(KeepAlive("a"), 199)
    assert result.status == LockStatus.NO_SESSION  # a keepalive at the deadline is too late
    assert result.events == (SessionExpired("a", 199),)
    assert m.sessions() == ()


def test_time_never_goes_backwards() -> None:
    m = machine_with(("a", 100), now=50)
    result = m.apply(KeepAlive("a"), 10)  # a new leader whose clock lags
    assert result.now_ms == 50 and result.lease_deadline_ms == 150
    assert m.now_ms == 50


def test_expire_tick_reaps_and_hands_locks_on() -> None:
    m = machine_with(("a", 100), ("b", 1000))
    m.apply(Acquire("a", "x"), 0)
    assert m.apply(Acquire("b", "x"), 0).status == LockStatus.QUEUED
    result = m.apply(Expire(), 100)
    assert result.events == (
        SessionExpired("a", 100),
        Released("a", "x", 1, ReleaseReason.SESSION_EXPIRED),
        Granted("b", "x", 2, 1000),
    )
    assert m.holder("x") == ("b", 2)


# ---- grants, FIFO, release ------------------------------------------------------------------------


def test_acquire_grant_busy_already_held() -> None:
    m = machine_with(("a", 100), ("b", 100))
    got = m.apply(Acquire("a", "x"), 5)
    assert (got.status, got.token, got.lease_deadline_ms) == (LockStatus.GRANTED, 1, 100)
    assert got.events == (Granted("a", "x", 1, 100),)
    again = m.apply(Acquire("a", "x"), 6)
    assert (again.status, again.token, again.events) == (LockStatus.ALREADY_HELD, 1, ())
    assert m.apply(Acquire("b", "x", wait=False), 7).status == LockStatus.BUSY
    assert m.waiters("x") == ()
    assert m.apply(Acquire("b", "x"), 8).status == LockStatus.QUEUED
    assert m.apply(Acquire("b", "x"), 9).status == LockStatus.QUEUED  # a retry does not queue twice
    assert m.waiters("x") == ("b",)


def test_waiters_are_granted_in_fifo_order_with_growing_tokens() -> None:
    m = machine_with(("a", 1000), ("b", 1000), ("c", 1000), ("d", 1000))
    m.apply(Acquire("a", "x"), 0)
    for sid in ("c", "b", "d"):
        m.apply(Acquire(sid, "x", priority=9 if sid == "d" else 0), 0)
    order, token = [], 1
    holder = "a"
    while True:
        result = m.apply(Release(holder, "x", token), 1)
        assert result.status == LockStatus.RELEASED
        if not grants(result):
            break
        ((holder, _, new_token),) = grants(result)
        assert new_token > token
        order.append(holder)
        token = new_token
    assert order == ["c", "b", "d"]  # priority does not jump the queue
    assert m.holder("x") is None and m.locks() == ()


def test_release_needs_the_current_token_and_the_holder() -> None:
    m = machine_with(("a", 1000), ("b", 1000))
    m.apply(Acquire("a", "x"), 0)
    assert m.apply(Release("b", "x", 1), 0).status == LockStatus.NOT_HOLDER
    assert m.apply(Release("a", "y", 1), 0).status == LockStatus.NOT_HOLDER
    m.apply(Release("a", "x", 1), 0)
    regrant = m.apply(Acquire("a", "x"), 0)
    assert regrant.token == 2
    # A delayed release from the first grant must not drop the second.
    assert m.apply(Release("a", "x", 1), 0).status == LockStatus.STALE_TOKEN
    assert m.holder("x") == ("a", 2)


def test_tokens_are_global_and_never_reused_when_a_lock_is_dropped() -> None:
    m = machine_with(("a", 1000))
    tokens = []
    for name in ("x", "y", "x", "x"):
        tokens.append(m.apply(Acquire("a", name), 0).token)
        m.apply(Release("a", name, tokens[-1] or 0), 0)
    assert tokens == [1, 2, 3, 4]
    assert m.next_token == 5


def test_cancel_wait() -> None:
    m = machine_with(("a", 1000), ("b", 1000))
    m.apply(Acquire("a", "x"), 0)
    m.apply(Acquire("b", "x"), 0)
    assert m.apply(CancelWait("b", "x"), 0).status == LockStatus.OK
    assert m.apply(CancelWait("b", "x"), 0).status == LockStatus.NOT_WAITING
    assert grants(m.apply(Release("a", "x", 1), 0)) == []


def test_close_session_releases_cancels_and_grants() -> None:
    m = machine_with(("a", 1000), ("b", 1000), ("c", 1000))
    m.apply(Acquire("a", "x"), 0)
    m.apply(Acquire("b", "y"), 0)
    m.apply(Acquire("a", "y"), 0)
    m.apply(Acquire("c", "x"), 0)
    result = m.apply(CloseSession("a"), 3)
    assert result.events == (
        WaitCancelled("a", "y", CancelReason.SESSION_CLOSED),
        Released("a", "x", 1, ReleaseReason.SESSION_CLOSED),
        Granted("c", "x", 3, 1000),
    )


# ---- the lapsed-lease rule -----------------------------------------------------------------------


def test_grant_skips_a_waiter_whose_lease_lapsed_in_the_same_instant() -> None:
    # a holds x until 500; b waits with a lease to 300; c waits with a lease to 2000.
    m = machine_with(("a", 500), ("b", 300), ("c", 2000))
    m.apply(Acquire("a", "x"), 0)
    m.apply(Acquire("b", "x"), 0)
    m.apply(Acquire("c", "x"), 0)
    result = m.apply(Release("a", "x", 1), 300)  # b's lease lapses at exactly this instant
    assert result.status == LockStatus.RELEASED
    assert grants(result) == [("c", "x", 2)]
    assert SessionExpired("b", 300) in result.events


def test_holder_and_first_waiter_lapsing_together_go_to_the_next_live_one() -> None:
    m = machine_with(("a", 100), ("b", 100), ("c", 1000))
    m.apply(Acquire("a", "x"), 0)
    m.apply(Acquire("b", "x"), 0)
    m.apply(Acquire("c", "x"), 0)
    result = m.apply(Expire(), 150)
    assert grants(result) == [("c", "x", 2)]
    granted = [e for e in result.events if isinstance(e, Granted)]
    assert all(g.lease_deadline_ms > result.now_ms for g in granted)


def test_nobody_is_granted_when_every_waiter_lapsed() -> None:
    m = machine_with(("a", 100), ("b", 50))
    m.apply(Acquire("a", "x"), 0)
    m.apply(Acquire("b", "x"), 0)
    result = m.apply(Expire(), 100)
    assert grants(result) == [] and m.locks() == ()


# ---- deadlocks -----------------------------------------------------------------------------------


def test_two_party_deadlock_youngest_is_the_victim() -> None:
    m = machine_with(("a", 1000), ("b", 1000))
    m.apply(Acquire("a", "x"), 0)
    m.apply(Acquire("b", "y"), 0)
    assert m.apply(Acquire("a", "y"), 0).status == LockStatus.QUEUED
    result = m.apply(Acquire("b", "x"), 0)
    assert result.status == LockStatus.DEADLOCK
    assert result.events == (DeadlockEvent(cycle=("b", "a"), locks=("x", "y"), victim="b", now_ms=0),)
    assert m.waiters("x") == () and m.waiters("y") == ("a",)
    assert m.wait_for_edges()[0].blocker == "b"


def test_lowest_priority_is_the_victim_and_is_told() -> None:
    m = machine_with(("a", 1000), ("b", 1000))
    m.apply(Acquire("a", "x"), 0)
    m.apply(Acquire("b", "y"), 0)
    m.apply(Acquire("a", "y", priority=-1), 0)
    result = m.apply(Acquire("b", "x", priority=5), 0)
    assert result.status == LockStatus.QUEUED
    assert result.events == (
        DeadlockEvent(cycle=("b", "a"), locks=("x", "y"), victim="a", now_ms=0),
        WaitCancelled("a", "y", CancelReason.DEADLOCK),
    )
    assert m.waiters("x") == ("b",) and m.waiters("y") == ()


def test_three_party_cycle_and_all_victim_waits_cancelled() -> None:
    m = machine_with(("a", 1000), ("b", 1000), ("c", 1000))
    for sid, name in (("a", "x"), ("b", "y"), ("c", "z")):
        m.apply(Acquire(sid, name), 0)
    m.apply(Acquire("a", "y", priority=1), 0)
    m.apply(Acquire("b", "z", priority=0), 0)
    m.apply(Acquire("b", "w-free-no"), 0)  # b also holds another lock; unaffected
    result = m.apply(Acquire("c", "x", priority=1), 0)
    (event,) = result.deadlocks
    assert event.cycle == ("c", "a", "b") and event.locks == ("x", "y", "z")
    assert event.victim == "b"
    assert result.status == LockStatus.QUEUED
    assert m.waiters("z") == () and m.holder("w-free-no") == ("b", 4)


def test_a_cycle_through_a_fifo_queue_is_a_deadlock() -> None:
    # h holds x; b then a queue for x; a holds y. b waiting for y closes a cycle:
    # a cannot get x before b has had it, and b cannot finish without y.
    m = machine_with(("h", 1000), ("a", 1000), ("b", 1000))
    m.apply(Acquire("h", "x"), 0)
    m.apply(Acquire("a", "y"), 0)
    m.apply(Acquire("b", "x"), 0)
    m.apply(Acquire("a", "x"), 0)
    result = m.apply(Acquire("b", "y"), 0)
    (event,) = result.deadlocks
    assert set(event.cycle) == {"a", "b"} and event.victim == "b"  # b opened after a


# ---- snapshots -----------------------------------------------------------------------------------


def busy_machine() -> LockStateMachine:
    m = machine_with(("a", 500), ("b", 800), ("c", 900))
    m.apply(Acquire("a", "x"), 1)
    m.apply(Acquire("b", "x", priority=3), 2)
    m.apply(Acquire("c", "x"), 3)
    m.apply(Acquire("c", "y"), 4)
    m.apply(Acquire("a", "y"), 5)
    return m


def test_snapshot_round_trip_gives_the_same_future() -> None:
    m = busy_machine()
    copy = LockStateMachine.from_snapshot(m.snapshot())
    assert copy.snapshot() == m.snapshot()
    script: list[tuple[Command, int]] = [
        (Release("a", "x", 1), 10), (Expire(), 600), (Acquire("b", "y"), 700), (Expire(), 5000),
        (OpenSession("a", 10), 5001), (Acquire("a", "x"), 5002)]
    for command, now in script:
        assert copy.apply(command, now) == m.apply(command, now)
    assert copy.apply(Acquire("a", "z"), 5003).token == m.next_token  # counter survived


def test_snapshot_is_deterministic_regardless_of_insertion_order() -> None:
    one = machine_with(("a", 10), ("b", 10))
    two = machine_with(("b", 10), ("a", 10))
    assert one.snapshot() != two.snapshot()  # open order (age) is state
    assert LockStateMachine().snapshot() == LockStateMachine().snapshot()


def test_malformed_snapshot_is_refused_and_changes_nothing() -> None:
    m = busy_machine()
    before = m.snapshot()
    body = msgpack.unpackb(before)
    body[5][0][1] = "nobody"  # holder that is not a session
    for bad in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb(body), msgpack.packb([2, *body[1:]])):
        with pytest.raises(LockCodecError):
            m.restore(bad)
    assert m.snapshot() == before


# ---- command encoding ----------------------------------------------------------------------------

COMMANDS = [OpenSession("cam-7", 5000), KeepAlive("s"), CloseSession("s"),
            Acquire("s", "camera-7/ptz", priority=-3, wait=False), Release("s", "l", 2**40),
            CancelWait("s", "l"), Expire()]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_and_entry_round_trip(command: Command) -> None:
    assert decode_command(encode_command(command)) == command
    assert decode_entry(encode_entry(1234, command)) == (1234, command)


def test_encoding_is_a_plain_documented_msgpack_array() -> None:
    assert msgpack.unpackb(encode_command(Acquire("s", "l", 2, True))) == [1, "acquire", "s", "l", 2, True]
    assert msgpack.unpackb(encode_entry(9, Expire())) == [1, 9, ["expire"]]


@pytest.mark.parametrize("data", [
    b"", b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([1]), msgpack.packb([1, "nope"]),
    msgpack.packb([1, "acquire", "s"]), msgpack.packb([1, "open", "s", 0]), msgpack.packb([1, "open", "", 5]),
    msgpack.packb([1, "acquire", "s", "l", True, True]), msgpack.packb([1, "release", "s", "l", 0]),
])
def test_bad_commands_are_refused_clearly(data: bytes) -> None:
    with pytest.raises(LockCodecError):
        decode_command(data)


def test_unknown_version_is_refused() -> None:
    with pytest.raises(UnsupportedVersion):
        decode_command(msgpack.packb([2, "expire"]))
    with pytest.raises(LockCodecError):
        decode_entry(msgpack.packb([1, -5, ["expire"]]))


def test_commands_validate_themselves() -> None:
    makers: list[Callable[[], object]] = [lambda: OpenSession("a", 0), lambda: Acquire("a", "x" * 300),
              lambda: Acquire("a", "l", wait=1),  # type: ignore[arg-type]
              lambda: Release("a", "l", True), lambda: KeepAlive("")]
    for make in makers:
        with pytest.raises(LockError):
            make()
    assert issubclass(LockError, EdgebusError)


def test_apply_entry_matches_apply() -> None:
    one, two = busy_machine(), busy_machine()
    assert one.apply_entry(encode_entry(20, Release("a", "x", 1))) == two.apply(Release("a", "x", 1), 20)


# ---- fencing ---------------------------------------------------------------------------------------


def test_fenced_resource_rejects_stale_tokens_per_lock() -> None:
    r = FencedResource()
    assert r.admit("x", 5) and r.admit("x", 5) and r.admit("x", 7)
    assert not r.admit("x", 6)
    assert r.admit("y", 1)  # each lock has its own high-water mark
    with pytest.raises(StaleTokenError):
        r.check("x", 3)
    assert r.high_water_marks() == {"x": 7, "y": 1}
    assert FencedResource(r.high_water_marks()).admit("x", 6) is False


def test_paused_holder_is_fenced_off_after_its_lease_lapses() -> None:
    m = machine_with(("slow", 100), ("fast", 1000))
    resource = FencedResource()
    old = m.apply(Acquire("slow", "x"), 0).token
    assert old is not None and resource.admit("x", old)
    m.apply(Acquire("fast", "x"), 1)
    # "slow" is SIGSTOPped past its lease; the tick hands the lock on.
    ((_, _, new),) = grants(m.apply(Expire(), 100))
    assert resource.admit("x", new)
    assert not resource.admit("x", old)  # slow wakes up and writes: refused
