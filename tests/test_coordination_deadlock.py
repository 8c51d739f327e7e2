"""Deadlock detection over a real Mosquitto: a 3-node group (separate processes) and two lock clients."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.coordination import LockClient
from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from protocols.coordination.group_state import decode_lock_result
from protocols.coordination.topics import CoordinationTopics
from protocols.locks import Acquire, LockStatus, encode_command
from schemas.errors import DeadlockVictim, LockUnavailable
from tests.brokers import MosquittoUnderTest

NODES = ["n1", "n2", "n3"]


def _bus(broker: MosquittoUnderTest, client_id: str) -> BusConfig:
    return BusConfig(host=broker.host, port=broker.port, username=broker.username, password=broker.password,
                     client_id=client_id, clean_start=True)


class Events:
    """Every JSON message on the group's deadlock events topic."""

    def __init__(self, session: BusSession, group: str) -> None:
        self.items: list[dict[str, object]] = []
        self._cond = threading.Condition()
        session.subscribe(CoordinationTopics(session.topics, group).lock_events(), self._on)

    def _on(self, msg: ReceivedMessage) -> None:
        with self._cond:
            self.items.append(json.loads(msg.payload))
            self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < n and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return len(self.items) >= n


@pytest.fixture
def stack(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[tuple[BusConfig, Events]]:
    cluster = LocalCluster(_bus(mosquitto_broker, "unused"), "dl", tmp_path / "raft")
    session = BusSession(_bus(mosquitto_broker, "dl-watch"))
    watcher = GroupWatcher(session, "dl")
    events = Events(session, "dl")
    session.start()
    assert session.wait_connected(10)
    cluster.start()
    try:
        assert watcher.leader(NODES, timeout=15) is not None
        yield _bus(mosquitto_broker, "unused"), events
    finally:
        cluster.stop()
        session.stop(flush_timeout=0)


def _wait_in_background(client: LockClient, name: str,
                        **kwargs: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(client.acquire(name, timeout=10, **kwargs))  # type: ignore[arg-type]
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)  # let the Acquire be queued behind the holder
    return t, out


def test_two_client_deadlock_publishes_one_event_and_fails_the_closing_acquire(
        stack: tuple[BusConfig, Events]) -> None:
    bus, events = stack
    with LockClient.connect(bus, "dl", "alice") as alice, LockClient.connect(bus, "dl", "bob") as bob:
        alice.acquire("L1")
        bob_l2 = bob.acquire("L2")
        waiter, got = _wait_in_background(alice, "L2")  # alice waits for bob
        # bob's wait for alice closes the cycle; equal priority, so the younger session (bob) is the victim
        with pytest.raises(DeadlockVictim, match="deadlock"):
            bob.acquire("L1", timeout=5)
        assert events.wait(1, timeout=5)
        time.sleep(0.5)  # a second copy (from any node) would have arrived by now
        assert len(events.items) == 1
        ev = events.items[0]
        assert ev["kind"] == "deadlock" and ev["group"] == "dl" and ev["victim"] == "bob"
        assert set(ev["cycle"]) == {"alice", "bob"}  # type: ignore[arg-type]
        assert set(ev["locks"]) == {"L1", "L2"}  # type: ignore[arg-type]
        assert ev["leader"] in NODES
        # The victim backs off; the survivor's wait is granted.
        assert bob.release("L2", bob_l2)
        waiter.join(10)
        assert len(got) == 1 and isinstance(got[0], int) and got[0] > bob_l2


def test_a_waiting_victim_hears_its_cancellation(stack: tuple[BusConfig, Events]) -> None:
    bus, events = stack
    with LockClient.connect(bus, "dl", "carol") as carol, LockClient.connect(bus, "dl", "dave") as dave:
        carol_l1 = carol.acquire("L1")
        dave.acquire("L2")
        waiter, got = _wait_in_background(carol, "L2", priority=0)  # carol waits for dave
        # dave (higher priority) closes the cycle; the lower-priority waiter carol is the victim
        dave_wait, dave_got = _wait_in_background(dave, "L1", priority=5)
        waiter.join(10)
        assert len(got) == 1 and isinstance(got[0], DeadlockVictim), got
        assert events.wait(1, timeout=5)
        assert events.items[0]["victim"] == "carol"
        assert carol.release("L1", carol_l1)
        dave_wait.join(10)
        assert len(dave_got) == 1 and isinstance(dave_got[0], int)
        assert len(events.items) == 1


def _queued(client: LockClient, session_id: str, name: str, timeout: float = 10.0) -> None:
    """Return once the lock table has ``session_id`` waiting for ``name`` (a non-waiting Acquire from a
    session that already waits answers QUEUED and changes nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = client.raft.request("lock", encode_command(Acquire(session_id, name, wait=False)))
        status = decode_lock_result(reply.result).status
        if status is LockStatus.QUEUED:
            return
        assert status is LockStatus.BUSY, status  # its Acquire is still on the way
    raise AssertionError(f"{session_id} never queued for {name}")


def _acquire_in_background(client: LockClient, name: str, **kwargs: object) -> tuple[threading.Thread,
                                                                                      list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(client.acquire(name, timeout=10, **kwargs))  # type: ignore[arg-type]
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_two_processes_acting_for_two_transactions_close_one_cycle_and_the_victim_reads_it(
        stack: tuple[BusConfig, Events]) -> None:
    """What a two-phase commit participant does: lock on behalf of its transaction's session, which
    another participant (here: another client) also acts for, so the wait-for graph has ONE node per
    transaction and the cycle through two processes is found."""
    bus, events = stack
    with LockClient.connect(bus, "dl", "px", poll_interval=0.1) as px, \
            LockClient.connect(bus, "dl", "py", poll_interval=0.1) as py:
        px.open_session("tx-1", 60_000)
        px.open_session("tx-2", 60_000)
        py.open_session("tx-1", 60_000)  # already open: kept as it is
        tx1_a = px.acquire("A", session_id="tx-1")
        tx2_b = px.acquire("B", session_id="tx-2")
        waiter, got = _acquire_in_background(py, "B", session_id="tx-1")  # tx-1 waits for tx-2
        _queued(px, "tx-1", "B")
        # tx-2 waits for tx-1: a cycle through both processes; tx-2 is the younger session: the victim.
        with pytest.raises(DeadlockVictim) as raised:
            py.acquire("A", session_id="tx-2", timeout=5)
        assert str(raised.value) == "deadlock (victim tx-2): tx-2 waits for A behind tx-1, " \
                                    "tx-1 waits for B behind tx-2"
        assert events.wait(1, timeout=5) and events.items[0]["victim"] == "tx-2"
        # The victim backs off (its other process releases); the survivor's wait, made by py and never
        # pushed to anyone, is noticed by polling.
        assert px.release("B", tx2_b, session_id="tx-2")
        waiter.join(10)
        assert len(got) == 1 and isinstance(got[0], int) and got[0] > tx2_b
        # A restarted process lets go without the tokens; the locks are free afterwards.
        assert py.relinquish("B", session_id="tx-1") and px.relinquish("A", session_id="tx-1")
        assert not px.relinquish("A", session_id="tx-1")  # nothing left to let go of
        assert px.acquire("A", wait=False) > tx1_a and px.acquire("B", wait=False) > got[0]


def test_a_waiting_victim_acting_for_another_session_learns_the_cycle_by_polling(
        stack: tuple[BusConfig, Events]) -> None:
    bus, _events = stack
    with LockClient.connect(bus, "dl", "qx", poll_interval=0.1) as qx, \
            LockClient.connect(bus, "dl", "qy", poll_interval=0.1) as qy:
        for tx in ("tx-3", "tx-4"):
            qx.open_session(tx, 60_000)
        tx3_a = qx.acquire("A", session_id="tx-3")
        qx.acquire("B", session_id="tx-4")
        waiter, got = _acquire_in_background(qy, "B", session_id="tx-3", priority=0)
        _queued(qx, "tx-3", "B")
        # tx-4 (higher priority) closes the cycle and keeps waiting; the waiting tx-3 is the victim.
        survivor, survivor_got = _acquire_in_background(qx, "A", session_id="tx-4", priority=5)
        waiter.join(10)
        assert len(got) == 1 and isinstance(got[0], DeadlockVictim), got
        assert str(got[0]) == "deadlock (victim tx-3): tx-3 waits for B behind tx-4, " \
                              "tx-4 waits for A behind tx-3"
        assert qx.release("A", tx3_a, session_id="tx-3")
        survivor.join(10)
        assert len(survivor_got) == 1 and isinstance(survivor_got[0], int)
        # A wait withdrawn by another process is no deadlock: the old report of tx-3 is not reused.
        waiter, got = _acquire_in_background(qy, "B", session_id="tx-3")
        _queued(qx, "tx-3", "B")
        assert qx.relinquish("B", session_id="tx-3")  # it only waited: the wait goes
        waiter.join(10)
        assert len(got) == 1 and type(got[0]) is LockUnavailable and "no longer queued" in str(got[0]), got
