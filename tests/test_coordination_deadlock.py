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
from protocols.coordination.topics import CoordinationTopics
from schemas.errors import DeadlockVictim
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
