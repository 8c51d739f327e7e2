"""edgebus on a real 3-node broker cluster (NATS 2.9, MQTT on JetStream): a node dies under load.

Simulated agents reach the cluster through a TCP proxy that plays the
operator's load balancer: some land on node n1, some on n2. The coordinator
(``edge-coordinator start``, stored acknowledgements on) is on n3, with a
persistent session. Retained births and ``offline`` wills published through one
node are seen by a watcher on another. Then n1 is killed with ``kill -9`` while
the devices publish; the load balancer sends them to n2 from then on. After the
agents stop, every sample each of them sequenced is in the store exactly once.

For a while after the kill NATS 2.9.10 refuses some new QoS 1 subscriptions
(its JetStream consumer create or delete times out; README "Which broker
cluster was tested"). BusSession asks again for a refused subscription with
back-off (short here: ``subscribe_retry_*_delay``) and, once its stored-ack
subscription is granted late, sends its unconfirmed batches again, so the
agents that moved recover on their own: the balancer sends them to n2 right
after the kill (no wait for NATS to take subscriptions again), and after n1 is
restarted nothing drops their links.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.session import BusConfig, BusSession
from coordinator.demo import SimulatedAgent
from coordinator.store.blocks import decode_block
from coordinator.store.plugins.sql import DEFAULT_DB_NAME
from schemas.errors import SubscriptionRefused
from tests.bus_helpers import Inbox, wait_until
from tests.cluster_broker import NatsCluster, NatsNode, nats_cluster
from tests.tcp_proxy import CuttableProxy

__all__ = ["nats_cluster"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
WAIT = 60.0


def bus(node_port: int, client_id: str, **extra: object) -> BusConfig:
    return BusConfig(host="127.0.0.1", port=node_port, client_id=client_id, protocol="3.1.1",
                     reconnect_min_delay=0.05, reconnect_max_delay=0.5,
                     subscribe_retry_min_delay=0.5, subscribe_retry_max_delay=4.0,
                     **extra)  # type: ignore[arg-type]


def subscribed(session: BusSession) -> bool:
    """Every route granted on the live connection (False while one is refused: it is asked again)."""
    try:
        return session.wait_subscribed(0.5)
    except SubscriptionRefused:
        return False


def start_coordinator(node: NatsNode, folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "coordinator.toml"
    config.write_text("\n".join([
        f'data_dir = "{folder / "data"}"', "embedded_broker = false", "stored_acks = true", "",
        "[broker]", 'host = "127.0.0.1"', f"port = {node.mqtt_port}", 'client_id = "coordinator-n3"',
        'protocol = "3.1.1"', "clean_start = false",
        "reconnect_min_delay = 0.05", "reconnect_max_delay = 0.5",
        "subscribe_retry_min_delay = 0.5", "subscribe_retry_max_delay = 4.0", ""]))
    with (folder / "coordinator.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", "start", "--config", str(config), "--no-http"],
            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=folder, stdout=log, stderr=subprocess.STDOUT)


def stored(db: Path, device: str) -> list[tuple[int, int]]:
    """Every (epoch, seq) stored for ``device``, repeats included."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT epoch, first_seq, body FROM metric_blocks WHERE device = ?",
                            (device,)).fetchall()
    return [(epoch, seq) for epoch, first_seq, body in rows
            for seq, *_ in decode_block(device, epoch, first_seq, body).samples()]


@pytest.fixture
def proxies(nats_cluster: NatsCluster) -> Iterator[dict[str, CuttableProxy]]:
    """The 'load balancer': one front port per node it first sends to."""
    made = {n.name: CuttableProxy("127.0.0.1", n.mqtt_port) for n in nats_cluster.nodes[:2]}
    try:
        yield made
    finally:
        for proxy in made.values():
            proxy.close()


def test_node_killed_under_load_every_sample_stored_once(
        nats_cluster: NatsCluster, proxies: dict[str, CuttableProxy], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.session")
    n1, n2, n3 = nats_cluster.nodes
    coordinator = start_coordinator(n3, tmp_path / "coordinator")
    watch_inbox = Inbox()
    watch = BusSession(bus(n2.mqtt_port, "watch-n2", clean_start=True))
    agents: list[SimulatedAgent] = []
    try:
        # Agents keep each sample until the coordinator says it is stored; unconfirmed ones go again.
        base = bus(1, "unused", end_to_end_ack="required", ack_timeout=2.0)
        for i in range(6):
            front = proxies["n1" if i % 2 == 0 else "n2"]
            agents.append(SimulatedAgent(f"gw-{i}", replace(base, port=front.port), interval=0.05, seed=i))
        db = tmp_path / "coordinator" / "data" / DEFAULT_DB_NAME
        assert wait_until(lambda: db.exists() or coordinator.poll() is not None, WAIT)
        for agent in agents:
            agent.start()
        assert all(a.session.wait_connected(WAIT) for a in agents)
        assert wait_until(lambda: all(len(stored(db, a.device)) > 20 for a in agents), WAIT), \
            _logs(tmp_path, nats_cluster)

        # Retained births and statuses published on n1 are there for a subscriber on n2.
        watch.subscribe("edgebus/+/birth", watch_inbox)
        watch.subscribe("edgebus/+/status", watch_inbox)
        watch.start()
        assert watch.wait_subscribed(WAIT)
        on_n1 = [a.device for a in agents[0::2]]
        assert watch_inbox.wait_for(lambda ms: {f"edgebus/{d}/birth" for d in on_n1}
                                    <= {m.topic for m in ms}), "retained births from n1 not seen on n2"

        # A will published by n1 (its client's link dropped without DISCONNECT) reaches n2's subscriber.
        proxies["n1"].cut()
        for device in on_n1:
            assert watch_inbox.wait_last(f"edgebus/{device}/status", b"offline", WAIT), device
        proxies["n1"].restore()
        for device in on_n1:
            assert watch_inbox.wait_last(f"edgebus/{device}/status", b"online", WAIT), device

        # kill -9 n1 while the devices publish; the load balancer sends new links to n2 at once (its
        # health check sees n2 listening). While JetStream regains its quorum (seen taking over 30 s)
        # NATS refuses some subscriptions; the sessions ask again, their outboxes hold the samples.
        before = {a.device: len(stored(db, a.device)) for a in agents}
        nats_cluster.kill(n1)
        proxies["n1"].cut()
        proxies["n1"].target = ("127.0.0.1", n2.mqtt_port)
        proxies["n1"].restore()
        assert wait_until(lambda: all(len(stored(db, a.device)) > before[a.device] + 20 for a in agents),
                          2 * WAIT), _logs(tmp_path, nats_cluster)

        # n1 comes back (same store); nobody drops the agents' links. An agent whose stored-ack
        # subscription NATS refused after the kill asks again until it is granted.
        nats_cluster.start(n1)
        assert nats_cluster.wait_ready(), nats_cluster.logs()
        assert wait_until(lambda: all(subscribed(a.session) for a in agents), WAIT), \
            ([a.session.stats().refused_subscriptions for a in agents], _logs(tmp_path, nats_cluster))

        for agent in agents:
            agent.stop_sampling()
        for agent in agents:
            assert agent.session.flush(WAIT), (agent.device, _unflushed(agent, db),
                                               _logs(tmp_path, nats_cluster))
        assert coordinator.poll() is None, _logs(tmp_path, nats_cluster)
        # What the agents' sessions went through (pytest -s shows it): refusals asked for again.
        granted = sorted(str(r.args[0]) for r in caplog.records  # type: ignore[index]
                         if r.msg.startswith("broker granted the subscription"))
        print(f"agents' subscriptions refused {caplog.text.count('broker refused the subscription')} "
              f"times, granted after refusals: {granted}, unconfirmed rows resent on a late grant "
              f"{caplog.text.count('while the stored acknowledgements were refused')} times, links lost "
              f"{sum(a.session.stats().connection_losses for a in agents)}")
    finally:
        for agent in agents:
            agent.stop()
        watch.stop(flush_timeout=0)
        coordinator.terminate()
        try:
            coordinator.wait(30)
        except subprocess.TimeoutExpired:
            coordinator.kill()
            coordinator.wait(10)
    for agent in agents:
        seqs = stored(db, agent.device)
        assert len(seqs) == len(set(seqs)), f"{agent.device}: a sample is stored twice"
        assert {e for e, _ in seqs} == {agent.publisher.epoch}
        numbers = sorted(s for _, s in seqs)
        assert numbers == list(range(len(numbers))), f"{agent.device}: gaps in the stored sequence"
        assert len(numbers) > 40


def _unflushed(agent: SimulatedAgent, db: Path) -> str:
    """What an agent still holds, against what the store has (a failure's message)."""
    spans = [(r.message.topic.rsplit("/", 1)[-1], r.message.span.first_seq, r.message.span.count)
             if r.message.span else (r.message.topic, None, None)
             for r in agent.session.outbox.peek(limit=50)]
    seqs = sorted(s for _, s in stored(db, agent.device))
    return (f"{len(agent.session.outbox)} rows left, e.g. {spans[:10]}; stored {len(seqs)} samples "
            f"up to {seqs[-1] if seqs else None}; {agent.session.stats()}")


def _logs(tmp_path: Path, cluster: NatsCluster) -> str:
    log = tmp_path / "coordinator" / "coordinator.log"
    return (log.read_text()[-3000:] if log.exists() else "") + "\n" + cluster.logs(1500)

