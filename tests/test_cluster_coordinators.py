"""Several coordinators on one stream ([cluster]): real processes on Mosquitto into PostgreSQL.

Three ``edge-coordinator start`` processes share a PostgreSQL schema; simulated
agents publish metrics with end-to-end acknowledgements required (a sample
leaves an agent's outbox only once a coordinator stored it). One coordinator
is killed with ``kill -9``: its devices move to the others; then a new one
joins: devices move to it. Afterwards every device's sequence numbers in the
store run from 0 to the last one the agent used, each exactly once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from coordinator.cli import main
from coordinator.demo import SimulatedAgent
from coordinator.store.plugins.sql import SqlStore
from coordinator.store.sql_engine import normalise_url
from protocols.sharding import assign
from tests.brokers import MosquittoUnderTest, free_port
from tests.test_store_support import POSTGRES_ENV, postgres_url

REPO = Path(__file__).resolve().parents[1]
GROUP = "ingest"
ROOT = "edgebus"


@dataclass
class Shares:
    """What the members say on the bus: presence and each one's devices (retained)."""

    online: dict[str, bool] = field(default_factory=dict)
    devices: dict[str, list[str]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, msg: ReceivedMessage) -> None:
        *_, kind, name = msg.topic.split("/")
        with self.cond:
            if kind == "members":
                self.online[name] = msg.payload == b"online"
            elif kind == "devices":
                self.devices[name] = json.loads(msg.payload)["devices"] if msg.payload else []
            self.cond.notify_all()

    def settled(self, members: set[str], devices: set[str]) -> bool:
        """Exactly ``members`` online, each saying it takes the devices the hash gives it."""
        expected = assign(devices, members)
        with self.cond:
            if {m for m, up in self.online.items() if up} != members:
                return False
            return all(set(self.devices.get(m, [])) == expected[m] for m in members)

    def wait(self, members: set[str], devices: set[str], timeout: float, c: Cluster) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.settled(members, devices):
                dead = [n for n, p in c.procs.items() if p.poll() is not None]
                assert not dead, f"coordinators {dead} exited\n{c.logs()}"
                if time.monotonic() > deadline:
                    return False
                self.cond.wait(0.5)
            return True

    def of(self, member: str) -> set[str]:
        with self.cond:
            return set(self.devices.get(member, []))


def api_cluster(port: int, settled: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    """``/api/v1/cluster`` once ``settled`` holds (the members' retained shares arrive in their own time)."""
    deadline = time.monotonic() + timeout
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            got = httpx.get(f"http://127.0.0.1:{port}/api/v1/cluster", timeout=5).json()
            if settled(got):
                return got
        time.sleep(0.2)
    raise AssertionError(f"/api/v1/cluster never showed the members' shares: {got}")


@dataclass
class Cluster:
    broker: MosquittoUnderTest
    root: Path
    url: str
    schema: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def bus(self, client_id: str, **extra: Any) -> BusConfig:
        return BusConfig(host=self.broker.host, port=self.broker.port, username=self.broker.username,
                         password=self.broker.password, client_id=client_id, clean_start=True,
                         reconnect_min_delay=0.05, reconnect_max_delay=0.5, **extra)

    def start(self, name: str, http_port: int | None = None) -> None:
        """Start coordinator ``name``; with ``http_port`` it also serves its API there."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "coordinator.toml"
        config.write_text("\n".join([
            f'data_dir = "{folder / "data"}"', "embedded_broker = false", "",
            "[broker]", f'host = "{self.broker.host}"', f"port = {self.broker.port}",
            f'username = "{self.broker.username}"', f'password = "{self.broker.password}"',
            f'client_id = "{name}"', "reconnect_min_delay = 0.05", "reconnect_max_delay = 0.5", "",
            "[store]", f'url = "{self.url}"', f'schema = "{self.schema}"', "",
            "[cluster]", f'group = "{GROUP}"', "settle_s = 0.3", "",
            *(["[http]", f"port = {http_port}", ""] if http_port is not None else [])]))
        with (folder / "coordinator.log").open("a") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "coordinator.cli", "start", "--config", str(config),
                 *(["--no-http"] if http_port is None else [])],
                env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=folder, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.parent.name}\n{p.read_text()[-3000:]}"
                         for p in self.root.glob("*/coordinator.log"))


@pytest.fixture
def cluster(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[Cluster]:
    url = postgres_url()
    if url is None:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    schema = f"edgebus_cluster_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    c = Cluster(mosquitto_broker, tmp_path, url, schema)
    try:
        yield c
    finally:
        c.stop()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def stored_seqs(c: Cluster, device: str) -> list[tuple[int, int]]:
    store = SqlStore.open(c.url, schema=c.schema)
    try:
        return sorted((s.epoch, s.seq) for s in store.iter_samples(device))
    finally:
        store.close()


def check_store(c: Cluster, agents: list[SimulatedAgent]) -> None:
    """Every number each agent used is stored once: 0..last, no gap, no repeat."""
    for agent in agents:
        seqs = stored_seqs(c, agent.device)
        assert seqs, f"{agent.device}: nothing stored"
        twice = len(seqs) - len(set(seqs))
        assert not twice, f"{agent.device}: {twice} samples stored twice"
        assert {e for e, _ in seqs} == {agent.publisher.epoch}
        numbers = [s for _, s in seqs]
        assert numbers == list(range(len(numbers))), f"{agent.device}: gaps in {numbers[:5]}..{numbers[-5:]}"


def test_devices_move_on_kill_and_join_and_every_sample_is_stored_once(cluster: Cluster) -> None:
    run_moves(cluster, devices=8, rounds=1)


@pytest.mark.slow
def test_repeated_kills_and_joins_under_more_devices(cluster: Cluster) -> None:
    run_moves(cluster, devices=24, rounds=3)


def run_moves(c: Cluster, *, devices: int, rounds: int) -> None:
    """Three members; ``rounds`` times: kill -9 the busiest, then a new member joins. Then check the store."""
    shares = Shares()
    watch = BusSession(c.bus("cluster-watch"))
    watch.subscribe(f"{ROOT}/_sys/cluster/{GROUP}/#", shares)
    watch.start()
    assert watch.wait_connected(10) and watch.wait_subscribed(10)
    # Agents keep every sample until a coordinator confirms it stored; unconfirmed ones go again after 1 s.
    base = c.bus("unused", end_to_end_ack="required", ack_timeout=1.0)
    agents = [SimulatedAgent(f"gw-{i:02d}", base, interval=0.05, seed=i) for i in range(devices)]
    ids = {a.device for a in agents}
    members = {"c1", "c2", "c3"}
    try:
        for name in sorted(members):
            c.start(name)
        for agent in agents:
            agent.start()
        assert shares.wait(members, ids, 60, c), (shares, c.logs())
        for n in range(rounds):
            victim = max(sorted(members), key=lambda m: len(shares.of(m)))
            moved = shares.of(victim)
            assert moved, "the hash left a coordinator without devices: pick more devices"
            killed_at = time.monotonic()
            c.kill(victim)
            members -= {victim}
            assert shares.wait(members, ids, 30, c), (shares, c.logs())
            print(f"\n{len(moved)} devices of the killed coordinator moved in "
                  f"{time.monotonic() - killed_at:.2f} s")
            time.sleep(1.0)  # the devices keep publishing to their new owners (load, not synchronisation)
            newcomer = f"c{4 + n}"
            api_port = free_port() if n == 0 else None
            c.start(newcomer, http_port=api_port)
            members |= {newcomer}
            assert shares.wait(members, ids, 60, c), (shares, c.logs())
            taken = shares.of(newcomer)
            assert taken, "the newcomer took no device"
            if n == 0:
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    config = c.root / newcomer / "coordinator.toml"
                    assert main(["cluster", "show", "--json", "--config", str(config)]) == 0
                shown = json.loads(out.getvalue())
                assert not shown[victim]["online"] and shown[newcomer]["online"]
                assert set(shown[newcomer]["devices"]) == taken
                # The same table from the newcomer's API: what it takes, and each member's share.
                assert api_port is not None
                expected = {m: shares.of(m) for m in members}
                api = api_cluster(api_port, lambda got, want=expected: {
                    m: set(got.get("table", {}).get(m, {}).get("devices", [])) for m in want} == want)
                assert api["clustered"] and api["member"] == newcomer and set(api["owned"]) == taken
                assert not api["table"][victim]["online"] and set(api["members"]) == members
            time.sleep(1.0)  # and to the newcomer
        for agent in agents:
            agent.stop_sampling()
        for agent in agents:
            # Everything published is confirmed stored (a sample leaves the outbox only then).
            assert agent.session.flush(60), (agent.device, len(agent.session.outbox), c.logs())
    finally:
        for agent in agents:
            agent.stop()
        watch.stop(flush_timeout=0)
    check_store(c, agents)
