"""A deadlock between two transactions through the lock service, on Mosquitto with a three-process Raft group.

Two participants guard their resources with :class:`LockingResource`: while
preparing they take locks from the group's lock table on behalf of the
transaction. Transaction 1 takes cam-7 at px and cam-8 at py; transaction 2
takes cam-8 at px and cam-7 at py: opposite orders. px prepares both first (so
each transaction holds one lock), then py starts and each transaction waits at
py for the other's lock. The lock service finds the cycle, picks a victim, and
py votes no for it with the service's account of the cycle; the victim aborts
with that reason, its lock at px goes with the abort, and the other
transaction gets its lock and commits.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.coordination import LockClient
from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.session import BusSession
from broker.twopc.client import TxClient, TxOutcome
from broker.twopc.lock_intents import LockIntentStore
from broker.twopc.locking_resource import LockingResource
from broker.twopc.participant_driver import ParticipantDriver
from broker.twopc.participant_store import ParticipantStore
from schemas.errors import TxAborted
from tests.brokers import MosquittoUnderTest
from tests.twopc_helpers import FileResource, bus_config, wait_until

pytestmark = pytest.mark.integration

NODES = ["n1", "n2", "n3"]
GROUP = "gd"


def lock_names(payload: bytes) -> list[str]:
    return list(json.loads(payload)["locks"])


def work(lock: str, value: str) -> bytes:
    return json.dumps({"locks": [lock], "set": {lock: value}}).encode()


@dataclass
class LockingParticipant:
    driver: ParticipantDriver
    session: BusSession
    files: FileResource
    resource: LockingResource
    locks: LockClient
    store: ParticipantStore

    def stop(self) -> None:
        self.driver.stop()
        self.resource.close()
        self.resource.intents.close()
        self.locks.close()
        self.session.stop(flush_timeout=1)
        self.store.close()


class Env:
    def __init__(self, broker: MosquittoUnderTest, tmp: Path) -> None:
        self.broker, self.tmp = broker, tmp
        self.cluster = LocalCluster(bus_config(broker, "unused"), GROUP, tmp / "raft")
        self.session = BusSession(bus_config(broker, "test-client"))
        self.watcher = GroupWatcher(self.session, GROUP)
        self.client = TxClient(self.session, GROUP, "tc1", retry_s=0.3)
        self.participants: dict[str, LockingParticipant] = {}

    def participant(self, pid: str) -> LockingParticipant:
        directory = self.tmp / "parts" / pid
        locks = LockClient.connect(bus_config(self.broker, f"locks-{pid}"), GROUP, f"locks-{pid}",
                                   poll_interval=0.1)
        files = FileResource(directory)
        intents = LockIntentStore(directory / "intents.db")
        resource = LockingResource(files, locks, lock_names, intents=intents)
        session = BusSession(bus_config(self.broker, f"p-{pid}"))
        store = ParticipantStore(directory / "records.db")
        driver = ParticipantDriver(session, GROUP, pid, resource, store)
        session.start()
        assert session.wait_connected(10)
        driver.start()
        assert session.wait_subscribed(10)
        self.participants[pid] = LockingParticipant(driver, session, files, resource, locks, store)
        return self.participants[pid]


@pytest.fixture
def env(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[Env]:
    e = Env(mosquitto_broker, tmp_path)
    e.session.start()
    assert e.session.wait_connected(10) and e.session.wait_subscribed(10)
    e.cluster.start()
    try:
        assert e.watcher.leader(NODES, timeout=20) is not None
        yield e
    finally:
        for p in e.participants.values():
            p.stop()
        e.cluster.stop()
        e.session.stop(flush_timeout=0)


def test_two_transactions_locking_in_opposite_orders_abort_one_naming_the_deadlock_and_commit_the_other(
        env: Env) -> None:
    px = env.participant("px")
    tx1, tx2 = env.client.new_id(), env.client.new_id()
    outcomes: dict[str, TxOutcome | TxAborted] = {}

    def run(tx_id: str, at_px: str, at_py: str) -> None:
        try:
            with env.client.transaction(timeout_s=20, tx_id=tx_id) as t:
                t.enlist("px", work(at_px, tx_id))
                t.enlist("py", work(at_py, tx_id))
            assert t.result is not None
            outcomes[tx_id] = t.result
        except TxAborted as exc:
            outcomes[tx_id] = exc

    threads = [threading.Thread(target=run, args=(tx1, "cam-7", "cam-8")),
               threading.Thread(target=run, args=(tx2, "cam-8", "cam-7"))]
    for t in threads:
        t.start()
    # px prepared both (and voted yes): tx1 holds cam-7, tx2 holds cam-8.
    assert wait_until(lambda: set(px.driver.in_doubt()) == {tx1, tx2}, 15)
    assert px.resource.holding() == {tx1: ("cam-7",), tx2: ("cam-8",)}
    # Only now py hears the prepares (the group resends them): each transaction waits for the other.
    py = env.participant("py")
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)

    aborted = [tx for tx, o in outcomes.items() if isinstance(o, TxAborted)]
    committed = [tx for tx, o in outcomes.items() if isinstance(o, TxOutcome) and o.committed]
    assert len(aborted) == 1 and len(committed) == 1, outcomes
    [victim], [winner] = aborted, committed
    reason = outcomes[victim].reason  # type: ignore[union-attr]
    assert reason.startswith(f"py voted no: deadlock (victim {victim}): {victim} waits for cam-"), reason
    assert f"behind {winner}" in reason and "cam-7" in reason and "cam-8" in reason, reason

    # The winner's work is applied at both participants, the victim's nowhere.
    won_px, won_py = ("cam-7", "cam-8") if winner == tx1 else ("cam-8", "cam-7")
    assert wait_until(lambda: px.files.state() == {won_px: winner}
                      and py.files.state() == {won_py: winner}, 10)
    # Afterwards no lock is held: each participant let go of its own, and the lock table agrees.
    assert wait_until(lambda: px.resource.holding() == {} and py.resource.holding() == {}
                      and not px.driver.in_doubt() and not py.driver.in_doubt(), 10)
    probe = LockClient.connect(bus_config(env.broker, "locks-probe"), GROUP, "locks-probe")
    try:
        for name in ("cam-7", "cam-8"):
            probe.release(name, probe.acquire(name, wait=False))  # LockUnavailable if anyone held it
    finally:
        probe.close()
    assert px.resource.lost_sessions == 0 and py.resource.lost_sessions == 0
