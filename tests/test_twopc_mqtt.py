"""Two-phase commit over a real Mosquitto: a Raft group of three processes, participants, a client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.router import ReceivedMessage
from broker.session import BusSession
from broker.twopc.client import AsyncTxClient, TxClient
from protocols.twopc import Outcome, Part, Vote
from protocols.twopc.messages import TxState
from protocols.twopc.topics import TxTopics
from schemas.errors import TxAborted
from schemas.messages import encode_record
from tests.brokers import MosquittoUnderTest
from tests.twopc_helpers import RunningParticipant, bus_config, start_participant, wait_until

NODES = ["n1", "n2", "n3"]
GROUP = "g1"


class Env:
    def __init__(self, broker: MosquittoUnderTest, tmp: Path) -> None:
        self.broker, self.tmp = broker, tmp
        self.cluster = LocalCluster(bus_config(broker, "unused"), GROUP, tmp / "raft")
        self.session = BusSession(bus_config(broker, "test-client"))
        self.watcher = GroupWatcher(self.session, GROUP)
        self.client = TxClient(self.session, GROUP, "tc1", retry_s=0.3)
        self.topics = TxTopics(self.session.topics, GROUP)
        self.events: list[dict[str, object]] = []
        self.errors: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self.session.subscribe(self.topics.events(), lambda m: self._json(m, self.events))
        self.session.subscribe(self.topics.dead_letters(), lambda m: self._json(m, self.errors))
        self.participants: dict[str, RunningParticipant] = {}

    def _json(self, msg: ReceivedMessage, into: list[dict[str, object]]) -> None:
        with self._lock:
            into.append(json.loads(msg.payload))

    def participant(self, pid: str) -> RunningParticipant:
        self.participants[pid] = start_participant(self.broker, GROUP, pid, self.tmp / "parts")
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


def test_a_transaction_commits_on_every_participant_and_ends(env: Env) -> None:
    a, b = env.participant("pa"), env.participant("pb")
    with env.client.transaction(timeout_s=10) as t:
        t.enlist("pa", json.dumps({"set": {"camera-7": "released"}}).encode())
        t.enlist("pb", json.dumps({"set": {"camera-7": "running"}}).encode())
    assert t.result is not None and t.result.committed
    assert wait_until(lambda: a.resource.state() == {"camera-7": "released"}
                      and b.resource.state() == {"camera-7": "running"}, 10)
    assert wait_until(lambda: any(e["event"] == "ended" and e["tx"] == t.tx_id for e in list(env.events)), 10)
    assert not a.driver.in_doubt() and not b.driver.in_doubt()
    assert env.client.status(t.tx_id).state is TxState.COMMIT


def test_a_no_vote_aborts_everywhere_with_the_reason(env: Env) -> None:
    a, _b = env.participant("pa"), env.participant("pb")
    with pytest.raises(TxAborted) as raised, env.client.transaction(timeout_s=10) as t:
        t.enlist("pa", json.dumps({"set": {"k": 1}}).encode())
        t.enlist("pb", json.dumps({"refuse": "camera 7 is not in this agent's table"}).encode())
    assert "pb voted no: camera 7 is not in this agent's table" in raised.value.reason
    assert wait_until(lambda: any(o is Outcome.ABORT for _, o in a.resource.finished), 10)
    assert a.resource.state() == {} and list(a.resource.prepared_ids()) == []


def test_a_missing_participant_times_out_into_an_abort(env: Env) -> None:
    a = env.participant("pa")
    result = env.client.run([Part("pa", b'{"set": {"x": 1}}'), Part("nobody", b"{}")], timeout_s=1.5)
    assert result.outcome is Outcome.ABORT and result.reason == "timeout"
    assert wait_until(lambda: list(a.resource.prepared_ids()) == [] and not a.driver.in_doubt(), 10)
    assert a.resource.state() == {}


def test_an_unknown_transaction_is_aborted_by_the_log_and_stays_so(env: Env) -> None:
    reply = env.client.status("never-begun-1")
    assert reply.state is TxState.ABORT and reply.reason == "never begun"


def test_bad_input_is_refused_counted_and_dead_lettered(env: Env) -> None:
    env.participant("pa")
    with env.client.transaction(timeout_s=10) as t:
        t.enlist("pa", b'{"set": {"y": 2}}')
    # A vote from a stranger for an unknown transaction, and garbage on the group topic.
    stranger = env.topics.group_inbox("stranger")
    env.session.publish(stranger, encode_record(Vote("no-such-tx", "stranger", True)), qos=1)
    env.session.publish(env.topics.group_inbox("stranger"), b"\x00not an envelope", qos=1)
    env.session.publish(env.topics.to("pa"), b"\x00garbage", qos=1)
    # A vote for participant pa sent on another sender's lane: forged, whatever it says.
    env.session.publish(env.topics.group_inbox("stranger"), encode_record(Vote(t.tx_id, "pa", False)), qos=1)
    codes = {"unknown_tx", "malformed", "wrong_lane"}
    assert wait_until(lambda: {e["code"] for e in list(env.errors)} >= codes, 10)
    # Counted where an operator looks (edge-bus raft status --json: each node's status).
    assert env.watcher.wait_for(lambda st: any(
        s.get("tx", {}).get("counters", {}).get("refused_unknown_tx", 0) >= 1 for s in st.values()), 10)
    # Nothing changed: the committed transaction stays committed, and the group still works.
    assert env.client.status(t.tx_id).state is TxState.COMMIT
    with env.client.transaction(timeout_s=10) as t2:
        t2.enlist("pa", b'{"set": {"z": 3}}')
    assert t2.result is not None and t2.result.committed


def test_the_async_client_commits(env: Env) -> None:
    env.participant("pa")

    async def go() -> bool:
        aclient = AsyncTxClient(env.client)
        async with aclient.transaction(timeout_s=10) as t:
            t.enlist("pa", b'{"set": {"a": 1}}')
        return t.result is not None and t.result.committed

    assert asyncio.run(go())


def _cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "broker.bus_cli", "tx", *args[:1], "--host", env.broker.host,
           "--port", str(env.broker.port), "--group", GROUP, *args[1:]]
    if env.broker.username:
        cmd[cmd.index("--group"):cmd.index("--group")] = ["--username", env.broker.username]
    run_env = {**os.environ, "EDGEBUS_BROKER_PASSWORD": env.broker.password or ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=run_env, check=False)


def test_the_command_line_runs_lists_and_reports_transactions(env: Env) -> None:
    a = env.participant("pa")
    done = _cli(env, "run", "--part", 'pa={"set": {"from-cli": 1}}', "--timeout", "10")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["outcome"] == "commit"
    assert wait_until(lambda: a.resource.state() == {"from-cli": 1}, 10)
    status = _cli(env, "status", body["tx"])
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "commit"
    refused = _cli(env, "run", "--part", 'pa={"refuse": "no room"}', "--timeout", "10")
    assert refused.returncode == 1 and json.loads(refused.stdout)["reason"] == "pa voted no: no room"
    listed = _cli(env, "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["group"] == GROUP
    bad = _cli(env, "run", "--part", "no-equals-sign")
    assert bad.returncode == 2 and "PARTICIPANT=PAYLOAD" in bad.stderr


def test_kill_9_of_the_leader_mid_transaction_another_node_finishes_it(env: Env) -> None:
    """The prepares are out and a participant is slow to answer when the manager's node dies: the new
    leader re-sends the prepare, collects the votes, logs the decision and tells everyone."""
    a, b = env.participant("pa"), env.participant("pb")
    for round_ in range(2):
        leader = env.watcher.leader(NODES, timeout=20)
        assert leader is not None
        outcome: list[object] = []
        parts = [Part("pa", json.dumps({"set": {f"r{round_}": "a"}}).encode()),
                 Part("pb", json.dumps({"set": {f"r{round_}": "b"}, "delay": 1.0}).encode())]
        runner = threading.Thread(
            target=lambda p=parts, out=outcome: out.append(env.client.run(p, timeout_s=15)))
        runner.start()
        # pa has voted yes (its prepared record is on disk) while pb still prepares: kill the manager.
        assert wait_until(lambda r=round_: a.driver.in_doubt() != () or f"r{r}" in a.resource.state(), 10)
        env.cluster.kill(leader)
        runner.join(30)
        env.cluster.start(leader)
        assert outcome and getattr(outcome[0], "committed", False), outcome
        assert wait_until(lambda r=round_: a.resource.state().get(f"r{r}") == "a"
                          and b.resource.state().get(f"r{r}") == "b", 15)
        assert wait_until(lambda: not a.driver.in_doubt() and not b.driver.in_doubt(), 15)
