"""LockingResource over the real lock table (one process, a clock the test moves): when its locks go.

The lock service here is :class:`protocols.locks.LockStateMachine` behind the
calls the wrapper makes (``TableLocks``), applied at once instead of through a
Raft log; tests/test_twopc_deadlock.py runs the same over Mosquitto and a
three-process group.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from broker.twopc.lock_intents import LockIntentStore
from broker.twopc.locking_resource import LockingResource
from broker.twopc.resource import PrepareAnswer
from protocols.coordination.lock_events import describe_deadlock
from protocols.locks import (
    Acquire,
    CancelWait,
    Command,
    DeadlockEvent,
    Expire,
    KeepAlive,
    LockResult,
    LockStateMachine,
    LockStatus,
    OpenSession,
    Release,
)
from protocols.twopc import Outcome
from schemas.errors import CoordinationError, CoordinationTimeout, DeadlockVictim, LockUnavailable
from tests.twopc_helpers import FileResource


class TableLocks:
    """The lock table in this process, answering what a LockClient would (a stand-in for the group)."""

    def __init__(self) -> None:
        self.table = LockStateMachine()
        self.now_ms = 1_000
        self.keepalives: Counter[str] = Counter()
        self.reachable = True
        self._cond = threading.Condition()
        self._reports: dict[str, DeadlockEvent] = {}

    def apply(self, command: Command) -> LockResult:
        if not self.reachable:
            raise CoordinationTimeout("no answer from the group (the test cut it off)")
        with self._cond:
            result = self.table.apply(command, self.now_ms)
            for report in result.deadlocks:
                self._reports[report.victim] = report
            self._cond.notify_all()
            return result

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        self.apply(Expire())

    def open_session(self, session_id: str, ttl_ms: int) -> None:
        status = self.apply(OpenSession(session_id, ttl_ms)).status
        if status not in (LockStatus.OK, LockStatus.SESSION_EXISTS):
            raise CoordinationError(f"cannot open {session_id}: {status}")

    def keep_alive(self, session_id: str) -> bool:
        alive = self.apply(KeepAlive(session_id)).status is not LockStatus.NO_SESSION
        with self._cond:
            self.keepalives[session_id] += 1
        return alive

    def acquire(self, name: str, *, timeout: float = 10.0, wait: bool = True, priority: int = 0,
                session_id: str | None = None) -> int:
        assert session_id is not None
        deadline, queued = time.monotonic() + timeout, False
        while True:
            result = self.apply(Acquire(session_id, name, priority, wait and not queued))
            if result.token is not None:
                return result.token
            cancelled = queued and result.status is LockStatus.BUSY
            if result.status is LockStatus.DEADLOCK or (cancelled and session_id in self._reports):
                raise DeadlockVictim(describe_deadlock(self._reports[session_id]))
            if result.status is not LockStatus.QUEUED:
                raise LockUnavailable(f"{name}: {result.status}")
            queued = True
            with self._cond:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                self.apply(CancelWait(session_id, name))
                raise CoordinationTimeout(f"{name} still held by another session after {timeout} s")

    def release(self, name: str, token: int, *, session_id: str | None = None) -> bool:
        assert session_id is not None
        return self.apply(Release(session_id, name, token)).status is LockStatus.RELEASED

    def relinquish(self, name: str, *, session_id: str | None = None) -> bool:
        assert session_id is not None
        result = self.apply(Acquire(session_id, name, wait=False))
        if result.token is not None:
            self.apply(Release(session_id, name, result.token))
            return result.status is LockStatus.ALREADY_HELD
        if result.status is LockStatus.QUEUED:
            return self.apply(CancelWait(session_id, name)).status is LockStatus.OK
        return False

    def wait_keepalives(self, session_id: str, more_than: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.keepalives[session_id] <= more_than and time.monotonic() < deadline:
                self._cond.wait(0.05)
        assert self.keepalives[session_id] > more_than, f"no keepalive of {session_id}"


def work(*locks: str, refuse: str = "", **values: object) -> bytes:
    body: dict[str, object] = {"locks": list(locks), "set": values}
    if refuse:
        body["refuse"] = refuse
    return json.dumps(body).encode()


def lock_names(payload: bytes) -> list[str]:
    return list(json.loads(payload)["locks"])


def wrap(inner: FileResource, locks: TableLocks, intents: LockIntentStore | None = None,
         **kwargs: object) -> LockingResource:
    return LockingResource(inner, locks, lock_names, intents=intents, **kwargs)  # type: ignore[arg-type]


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_locks_are_held_while_in_doubt_and_released_when_the_decision_is_applied(tmp_path: Path) -> None:
    locks, inner = TableLocks(), FileResource(tmp_path / "p")
    r = wrap(inner, locks)
    try:
        assert r.prepare("tx-1", work("cam-7", "cam-8", cam7="b"), soon()).ok
        assert locks.table.holder("cam-7") is not None and locks.table.holder("cam-7")[0] == "tx-1"
        assert locks.table.holder("cam-8") is not None and locks.table.holder("cam-8")[0] == "tx-1"
        assert r.holding() == {"tx-1": ("cam-7", "cam-8")}
        r.finish("tx-1", Outcome.COMMIT)
        assert inner.state() == {"cam7": "b"}  # the decision was applied ...
        assert locks.table.locks() == () and r.holding() == {}  # ... and every lock went with it
        assert r.intents.load() == {}
        r.finish("tx-1", Outcome.COMMIT)  # a repeat is done
    finally:
        r.close()


def test_an_abort_applied_releases_too(tmp_path: Path) -> None:
    locks = TableLocks()
    r = wrap(FileResource(tmp_path / "p"), locks)
    try:
        assert r.prepare("tx-1", work("cam-7"), soon()).ok
        r.finish("tx-1", Outcome.ABORT)
        assert locks.table.locks() == () and r.intents.load() == {}
    finally:
        r.close()


def test_a_refusing_inner_resource_leaves_no_lock_behind(tmp_path: Path) -> None:
    locks = TableLocks()
    r = wrap(FileResource(tmp_path / "p"), locks)
    try:
        answer = r.prepare("tx-1", work("cam-7", "cam-8", refuse="camera 7 is not here"), soon())
        assert answer == PrepareAnswer(False, "camera 7 is not here")
        assert locks.table.locks() == () and r.holding() == {} and r.intents.load() == {}
    finally:
        r.close()


def test_a_lock_still_held_at_the_deadline_refuses_and_lets_go_of_the_others(tmp_path: Path) -> None:
    locks = TableLocks()
    locks.open_session("someone-else", 60_000)
    other = locks.acquire("cam-8", session_id="someone-else")
    r = wrap(FileResource(tmp_path / "p"), locks)
    try:
        answer = r.prepare("tx-1", work("cam-7", "cam-8"), soon(0.3))
        assert not answer.ok and answer.reason.startswith("lock cam-8: cam-8 still held")
        assert locks.table.holder("cam-7") is None  # taken first, released on refusing
        assert locks.table.waiters("cam-8") == ()  # no wait left behind
        assert locks.table.holder("cam-8") == ("someone-else", other)
    finally:
        r.close()


def test_bad_work_a_passed_deadline_and_an_unreachable_lock_service_are_no_votes(tmp_path: Path) -> None:
    locks = TableLocks()
    r = wrap(FileResource(tmp_path / "p"), locks)
    try:
        answer = r.prepare("tx-1", b"not json", soon())
        assert not answer.ok and answer.reason.startswith("cannot tell which locks to take")
        answer = r.prepare("tx-3", work("cam-7"), time.monotonic() - 1)
        assert answer == PrepareAnswer(False, "the prepare deadline passed before lock cam-7 was asked for")
        locks.reachable = False
        answer = r.prepare("tx-2", work("cam-7"), soon())
        assert not answer.ok and "no answer from the group" in answer.reason
        locks.reachable = True
        assert locks.table.locks() == () and r.intents.load() == {}
    finally:
        r.close()


def test_a_deadlock_between_two_transactions_through_two_participants_refuses_the_victim(
        tmp_path: Path) -> None:
    locks = TableLocks()
    px, py = wrap(FileResource(tmp_path / "px"), locks), wrap(FileResource(tmp_path / "py"), locks)
    try:
        assert px.prepare("tx-1", work("a"), soon()).ok
        assert px.prepare("tx-2", work("b"), soon()).ok
        answers: dict[str, bool] = {}
        reasons: dict[str, str] = {}

        def prepare_at_py(tx: str, lock: str) -> None:
            answer = py.prepare(tx, work(lock), soon())
            answers[tx], reasons[tx] = answer.ok, answer.reason

        t1 = threading.Thread(target=prepare_at_py, args=("tx-1", "b"))
        t1.start()
        while locks.table.waiters("b") != ("tx-1",):
            time.sleep(0.01)
        prepare_at_py("tx-2", "a")  # closes the cycle; the younger session (tx-2) is the victim
        assert answers == {"tx-2": False}
        assert reasons["tx-2"] == ("deadlock (victim tx-2): tx-2 waits for a behind tx-1, "
                                   "tx-1 waits for b behind tx-2")
        px.finish("tx-2", Outcome.ABORT)  # the group's abort reaches the victim's other participant
        t1.join(5)
        assert answers == {"tx-1": True, "tx-2": False}
        px.finish("tx-1", Outcome.COMMIT)
        py.finish("tx-1", Outcome.COMMIT)
        assert locks.table.locks() == ()
    finally:
        px.close()
        py.close()


def test_keepalives_hold_in_doubt_locks_past_the_ttl_until_they_stop(tmp_path: Path) -> None:
    locks = TableLocks()
    r = wrap(FileResource(tmp_path / "p"), locks, ttl_ms=1_000, keepalive_s=0.01)
    assert r.prepare("tx-1", work("cam-7"), soon()).ok
    for _ in range(5):  # 3 s of lock-table time: three TTLs
        seen = locks.keepalives["tx-1"]
        locks.advance(600)
        locks.wait_keepalives("tx-1", seen)
        assert locks.table.holder("cam-7") is not None, "the lease lapsed while in doubt"
    r.close()  # the participant dies in doubt: nobody renews the lease
    locks.advance(1_000)
    assert locks.table.holder("cam-7") is None


def test_a_restarted_participant_takes_up_its_locks_and_lets_go_when_the_decision_comes(
        tmp_path: Path) -> None:
    locks = TableLocks()
    inner = FileResource(tmp_path / "p")
    intents = LockIntentStore(tmp_path / "p" / "lock-intents.db")
    r = wrap(inner, locks, intents, ttl_ms=10_000)
    assert r.prepare("tx-1", work("cam-7", "cam-8"), soon()).ok  # voted yes (say), then:
    r.close()  # crash
    intents.close()
    seen = locks.keepalives["tx-1"]
    locks.advance(8_000)  # down most of a TTL

    intents = LockIntentStore(tmp_path / "p" / "lock-intents.db")
    r = wrap(inner, locks, intents, ttl_ms=10_000)
    try:
        locks.wait_keepalives("tx-1", seen)  # renewed at once on start
        locks.advance(8_000)
        assert locks.table.holder("cam-7") is not None and locks.table.holder("cam-8") is not None
        assert set(r.prepared_ids()) == {"tx-1"} and r.holding() == {"tx-1": ("cam-7", "cam-8")}
        r.finish("tx-1", Outcome.COMMIT)  # the group's answer to the in-doubt query
        assert locks.table.locks() == () and r.intents.load() == {} and list(r.prepared_ids()) == []
    finally:
        r.close()
        intents.close()


def test_a_release_that_fails_is_raised_so_the_decision_is_applied_again(tmp_path: Path) -> None:
    locks = TableLocks()
    r = wrap(FileResource(tmp_path / "p"), locks)
    try:
        assert r.prepare("tx-1", work("cam-7"), soon()).ok
        locks.reachable = False
        with pytest.raises(CoordinationError, match="not released yet"):
            r.finish("tx-1", Outcome.COMMIT)
        assert r.holding() == {"tx-1": ("cam-7",)}  # still ours, still kept alive
        locks.reachable = True
        r.finish("tx-1", Outcome.COMMIT)
        assert locks.table.locks() == ()
    finally:
        r.close()
