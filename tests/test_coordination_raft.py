"""Raft over a real Mosquitto with every node a separate OS process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.coordination import RaftClient
from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.session import BusConfig, BusSession
from schemas.errors import CoordinationError
from tests.brokers import MosquittoUnderTest

NODES = ["n1", "n2", "n3"]


def _bus(broker: MosquittoUnderTest, client_id: str) -> BusConfig:
    return BusConfig(host=broker.host, port=broker.port, username=broker.username, password=broker.password,
                     client_id=client_id, clean_start=True)


@pytest.fixture
def group(mosquitto_broker: MosquittoUnderTest, tmp_path: Path
          ) -> Iterator[tuple[LocalCluster, GroupWatcher, RaftClient]]:
    cluster = LocalCluster(_bus(mosquitto_broker, "unused"), "g1", tmp_path / "raft")
    session = BusSession(_bus(mosquitto_broker, "test-client"))
    watcher = GroupWatcher(session, "g1")
    client = RaftClient(session, "g1", "tc1", retry_interval=0.2, timeout=10.0)
    session.start()
    assert session.wait_connected(10)
    cluster.start()
    try:
        yield cluster, watcher, client
    finally:
        cluster.stop()
        session.stop(flush_timeout=0)


def test_three_nodes_elect_one_leader_and_replicate(
        group: tuple[LocalCluster, GroupWatcher, RaftClient]) -> None:
    _cluster, watcher, client = group
    leader = watcher.leader(NODES, timeout=15)
    assert leader in NODES
    values = [f"v{i}".encode() for i in range(20)]
    slots = [client.append(v) for v in values]
    assert slots == list(range(1, 21))
    assert client.read() == values
    # Every node applies what was committed, and all agree on the one leader of the term.
    assert watcher.wait_for(lambda st: all(st.get(n, {}).get("applied", 0) >= 22 for n in NODES), 10)
    terms = {watcher.statuses[n]["term"] for n in NODES}
    leaders = [n for n in NODES if watcher.statuses[n]["role"] == "leader"]
    assert len(terms) == 1 and leaders == [leader]
    assert all(watcher.statuses[n]["leader"] == leader for n in NODES)


def test_kill_9_leader_under_load_loses_no_acknowledged_entry(
        group: tuple[LocalCluster, GroupWatcher, RaftClient]) -> None:
    cluster, watcher, client = group
    old = watcher.leader(NODES, timeout=15)
    assert old is not None
    acked: list[bytes] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            value = f"w{i}".encode()
            try:
                client.append(value, timeout=10)
            except CoordinationError as exc:  # unacknowledged: may or may not be in the log
                failed.append(exc)
                continue
            finally:
                i += 1
            acked.append(value)

    writer = threading.Thread(target=load)
    writer.start()
    try:
        deadline = time.monotonic() + 15
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= 20, "no progress before the kill"
        cluster.kill(old)
        before_kill = len(acked)
        survivors = [n for n in NODES if n != old]
        new = watcher.leader(survivors, timeout=15, not_=old)
        assert new is not None and new != old
        deadline = time.monotonic() + 15
        while len(acked) < before_kill + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= before_kill + 20, "no progress after the failover"
    finally:
        stop.set()
        writer.join(20)
    register = client.read()
    missing = [v for v in acked if v not in register]
    assert not missing, f"acknowledged entries lost: {missing[:5]}"
    # Retries carry the same (client, seq), so an acknowledged append is applied exactly once.
    assert all(register.count(v) == 1 for v in acked)
    # The killed node restarts from its SQLite log and catches up.
    cluster.start(old)
    commit = max(watcher.statuses[n]["commit"] for n in survivors)
    assert watcher.wait_for(lambda st: st.get(old, {}).get("applied", 0) >= commit
                            and st[old]["role"] == "follower", 15)
