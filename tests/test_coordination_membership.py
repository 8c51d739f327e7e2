"""Operating a Raft group: join and add a node, remove a dead one, transfer leadership.

The first tests drive the pure core (what the driver relies on); the rest run
every node as a separate OS process on a real Mosquitto and operate it through
:class:`RaftClient` and the ``edge-bus raft`` CLI, while a writer keeps
appending: no entry acknowledged to it may be lost, and a node added under
load must catch up with all of them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest

from broker.coordination import RaftClient
from broker.coordination.cli import raft_main
from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.session import BusConfig, BusSession
from protocols.raft import Accepted, RaftConfig, RaftNode, Rejected, Role
from protocols.sim import SplitMix64
from schemas.errors import AdminRefused, CoordinationError
from tests.brokers import MosquittoUnderTest
from tests.test_raft_unit import CFG, Net

GROUP = "mg"

# -- the pure core ------------------------------------------------------------------------------------


def _joiner(net: Net, node: str, cfg: RaftConfig = CFG) -> RaftNode:
    """Replace ``node`` by one started as node_main --join does: no bootstrap members."""
    net.nodes[node] = RaftNode(node, [], net.sms[node], SplitMix64(77), cfg, net.stores[node].load())
    return net.nodes[node]


@pytest.mark.parametrize("snapshot_threshold", [0, 3], ids=["appends", "snapshot"])
def test_a_joining_node_never_campaigns_and_learns_the_members(snapshot_threshold: int) -> None:
    cfg = RaftConfig(election_ticks=10, heartbeat_ticks=2, snapshot_threshold=snapshot_threshold)
    net = Net(["a", "b", "c", "d"], cfg, members=["a", "b", "c"])
    d = _joiner(net, "d", cfg)
    net.ticks(60)
    for k in range(7):
        net.propose(f"x{k}".encode(), "c1", k + 1)
    assert d.term == 0 and d.role is Role.FOLLOWER and d.members == ()  # listened, never campaigned
    lead = net.leader()
    assert isinstance(lead.propose_membership(add="d"), Accepted)
    net.flush(lead.id)
    net.ticks(10)
    assert d.members == ("a", "b", "c", "d") and d.leader == lead.id
    assert net.sms["d"].items == [f"x{k}".encode() for k in range(7)]
    assert (d.log.snapshot_index > 0) == bool(snapshot_threshold)


def test_no_membership_change_during_a_transfer_and_a_candidate_is_chosen() -> None:
    net = Net(["a", "b", "c"])
    net.ticks(40)
    lead = net.leader()
    target = lead.transfer_candidate()
    assert target is not None and target != lead.id and lead.transferee is None
    assert lead.transfer_leadership(target) and lead.transferee == target
    assert lead.propose_membership(add="d") == Rejected("leadership transfer in progress")
    net.flush(lead.id)
    net.deliver()
    net.ticks(2)
    assert net.leader().id == target and lead.transferee is None and lead.transfer_candidate() is None


# -- real processes on Mosquitto ------------------------------------------------------------------


def _bus(broker: MosquittoUnderTest, client_id: str) -> BusConfig:
    return BusConfig(host=broker.host, port=broker.port, username=broker.username, password=broker.password,
                     client_id=client_id, clean_start=True)


@dataclass
class Writer:
    """Appends ``w0, w1, ...`` one at a time until stopped; ``acked`` are those the group confirmed."""

    client: RaftClient
    acked: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            value = f"w{i}".encode()
            i += 1
            try:
                self.client.append(value, timeout=10)
            except CoordinationError:
                continue  # unacknowledged: may or may not be in the log
            self.acked.append(value)

    def progress(self, more: int, timeout: float = 20) -> bool:
        """Wait (bounded) until ``more`` further appends were acknowledged."""
        goal = len(self.acked) + more
        deadline = time.monotonic() + timeout
        while len(self.acked) < goal and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.acked) >= goal

    def stop(self) -> list[bytes]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(20)
        return list(self.acked)


@dataclass
class Env:
    broker: MosquittoUnderTest
    data_dir: Path
    watcher: GroupWatcher
    op: RaftClient  # the operator
    writer: Writer
    clusters: list[LocalCluster] = field(default_factory=list)

    def cluster(self, nodes: tuple[str, ...]) -> LocalCluster:
        c = LocalCluster(_bus(self.broker, "unused"), GROUP, self.data_dir, nodes=nodes)
        self.clusters.append(c)
        c.start()
        return c

    def cli(self, *args: str) -> int:
        b = self.broker
        return raft_main([args[0], "--host", b.host, "--port", str(b.port), "--username", b.username,
                          "--group", GROUP, *args[1:]])


@pytest.fixture
def env(mosquitto_broker: MosquittoUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[Env]:
    monkeypatch.setenv("EDGEBUS_BROKER_PASSWORD", mosquitto_broker.password)  # for the CLI
    session = BusSession(_bus(mosquitto_broker, "membership-test"))
    watcher = GroupWatcher(session, GROUP)
    op = RaftClient(session, GROUP, "op", retry_interval=0.2, timeout=15.0)
    writer = Writer(RaftClient(session, GROUP, "w", retry_interval=0.2, timeout=10.0))
    session.start()
    assert session.wait_connected(10)
    e = Env(mosquitto_broker, tmp_path / "raft", watcher, op, writer)
    try:
        yield e
    finally:
        writer.stop()
        for c in e.clusters:
            c.stop()
        session.stop(flush_timeout=0)


def _register(client: RaftClient) -> tuple[str, list[bytes]]:
    """Read the register through the log: (the leader whose state machine answered, its contents)."""
    reply = client.request("read")
    _version, status, value = msgpack.unpackb(reply.result)
    assert status == "ok"
    return reply.leader, [bytes(v) for v in value]


def _assert_nothing_lost(acked: list[bytes], register: list[bytes]) -> None:
    missing = [v for v in acked if v not in register]
    assert not missing, f"acknowledged entries lost: {missing[:5]}"
    assert all(register.count(v) == 1 for v in acked)


def test_a_joining_node_is_added_under_load_and_catches_up(env: Env) -> None:
    nodes = ("n1", "n2", "n3")
    cluster, watcher, op = env.cluster(nodes), env.watcher, env.op
    assert watcher.leader(list(nodes), timeout=15) is not None
    cluster.start("n4", join=True)
    assert watcher.wait_for(lambda st: "n4" in st, 15)
    assert watcher.statuses["n4"]["members"] == [] and watcher.statuses["n4"]["role"] == "follower"
    writer = env.writer.start()
    assert writer.progress(20), "no progress before the change"

    members = op.add_member("n4")
    assert members == ("n1", "n2", "n3", "n4")
    assert op.add_member("n4") == members  # a retry, or a second operator: nothing to do, ok
    assert writer.progress(20), "no progress after the change"
    acked = writer.stop()

    _leader, register = _register(op)
    _assert_nothing_lost(acked, register)
    # n4 learnt the configuration from the leader and applies everything committed...
    assert watcher.wait_for(lambda st: st.get("n4", {}).get("members") == list(members)
                            and st["n4"]["applied"] >= max(s["commit"] for s in st.values()), 15)
    # ...and its own state machine holds every acknowledged entry: make it lead, then read through it.
    assert op.transfer_leadership("n4") == "n4"
    assert watcher.leader(list(members), timeout=15) == "n4"
    leader, register = _register(op)
    assert leader == "n4"
    _assert_nothing_lost(acked, register)


def test_transfer_to_a_named_node_under_load_and_the_leader_cannot_be_removed(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = ("n1", "n2", "n3")
    env.cluster(nodes)
    watcher, op = env.watcher, env.op
    old = watcher.leader(list(nodes), timeout=15)
    assert old is not None

    with pytest.raises(AdminRefused, match="transfer leadership first"):
        op.remove_member(old)
    assert env.cli("remove-member", old) == 1
    assert "transfer leadership first" in capsys.readouterr().err
    assert op.remove_member("n9") == nodes  # not a member: nothing to do, ok

    writer = env.writer.start()
    assert writer.progress(20)
    target = next(n for n in nodes if n != old)
    assert env.cli("transfer", "--to", target) == 0
    assert json.loads(capsys.readouterr().out)["leader"] == target
    assert watcher.leader(list(nodes), timeout=15, not_=old) == target
    assert writer.progress(20), "no progress after the transfer"
    # With no --to the leader hands over to its most caught-up follower.
    third = op.transfer_leadership()
    assert third != target and watcher.leader(list(nodes), timeout=15, not_=target) == third
    assert writer.progress(10)
    acked = writer.stop()
    _leader, register = _register(op)
    _assert_nothing_lost(acked, register)


def test_remove_a_killed_node_and_the_group_of_three_keeps_committing(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = ("n1", "n2", "n3", "n4")
    cluster, watcher, op = env.cluster(nodes), env.watcher, env.op
    leader = watcher.leader(list(nodes), timeout=15)
    assert leader is not None
    writer = env.writer.start()
    assert writer.progress(20)

    victim = next(n for n in nodes if n != leader)
    cluster.kill(victim)
    survivors = tuple(n for n in nodes if n != victim)
    assert env.cli("remove-member", victim) == 0
    assert json.loads(capsys.readouterr().out)["members"] == list(survivors)
    assert op.remove_member(victim) == survivors
    assert watcher.wait_for(lambda st: victim not in st, 10)  # the leader cleared its status
    assert writer.progress(20), "no progress after the removal"

    # Three members now: a quorum is two, so one more failure is survivable (of four it was not).
    second = next(n for n in survivors if n != leader)
    cluster.kill(second)
    assert writer.progress(20), "no progress with two of the three members left"
    acked = writer.stop()
    _leader, register = _register(op)
    _assert_nothing_lost(acked, register)

    assert env.cli("status", "--json") == 0
    statuses = json.loads(capsys.readouterr().out)
    assert statuses[leader]["members"] == list(survivors) and victim not in statuses
