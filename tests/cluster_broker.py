"""A private 3-node NATS cluster speaking MQTT (JetStream underneath), started on this one machine.

Why NATS and not RabbitMQ 3.10 (README "Which broker cluster was tested"): NATS
keeps MQTT sessions, retained messages and unacknowledged QoS 1 deliveries in
JetStream streams replicated over the cluster, so a QoS 1 session outlives the
node it was on; RabbitMQ 3.10 keeps a session's queue on the node the client
connected to and its retained messages node-local.

Each node gets its own name, client/cluster/MQTT ports and JetStream store
under one temporary directory; nothing touches a system broker. Every wait is
bounded, and :meth:`NatsCluster.close` kills every node it started and removes
the directory, also at interpreter exit.

Fixture ``nats_cluster`` skips when ``nats-server`` is missing, unless
``EDGEBUS_REQUIRE_CLUSTER_BROKER=1`` turns the skip into a failure.

Run by hand: ``python -m tests.cluster_broker`` starts the cluster, prints the
MQTT ports and waits for Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import restartable_port, wait_for_port

__all__ = ["REQUIRE_ENV", "NatsCluster", "NatsNode", "find_nats_server", "nats_cluster"]

REQUIRE_ENV = "EDGEBUS_REQUIRE_CLUSTER_BROKER"
CLUSTER_NAME = "edgebus-test"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_LIVE: set[NatsCluster] = set()


@atexit.register
def _close_leftovers() -> None:
    for cluster in list(_LIVE):
        cluster.close()


def find_nats_server() -> str | None:
    """nats-server on PATH, else Debian's /usr/sbin/nats-server."""
    found = shutil.which("nats-server")
    if found:
        return found
    candidate = Path("/usr/sbin/nats-server")
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


@dataclass
class NatsNode:
    """One server: its ports, files and (while running) process."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    monitor_port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.folder / "nats.conf"

    @property
    def log(self) -> Path:
        return self.folder / "nats.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class NatsCluster:
    """Three (or ``size``) NATS servers routed to each other, each with JetStream and an MQTT listener."""

    binary: str
    root: Path
    size: int = 3
    host: str = "127.0.0.1"
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(1, self.size + 1):
            folder = self.root / f"n{i}"
            folder.mkdir(parents=True)
            self.nodes.append(NatsNode(f"n{i}", restartable_port(), restartable_port(), restartable_port(),
                                       restartable_port(), folder))
        for node in self.nodes:
            routes = ", ".join(f'"nats-route://{self.host}:{n.cluster_port}"' for n in self.nodes
                               if n is not node)
            node.config.write_text("\n".join([
                f'server_name: "{node.name}"', f'listen: "{self.host}:{node.client_port}"',
                f"http_port: {node.monitor_port}",
                f'jetstream {{ store_dir: "{node.folder / "js"}", max_memory_store: 64MB,'
                ' max_file_store: 1GB }',
                f'cluster {{ name: "{CLUSTER_NAME}", listen: "{self.host}:{node.cluster_port}",'
                f' routes: [{routes}] }}',
                # Sessions, retained messages and QoS 1 deliveries on all 3 nodes; ack_wait: a QoS 1
                # message not acknowledged within it is sent again (DUP).
                f'mqtt {{ listen: "{self.host}:{node.mqtt_port}", ack_wait: "5s", stream_replicas: 3 }}',
                ""]))

    def start(self, node: NatsNode) -> None:
        """Start one node (again, after a kill: same name, ports and JetStream store)."""
        if node.running():
            return
        log = node.log.open("ab")
        try:
            node.proc = subprocess.Popen([self.binary, "-c", str(node.config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        _LIVE.add(self)

    def start_all(self, timeout: float = READY_TIMEOUT) -> None:
        for node in self.nodes:
            self.start(node)
        if not self.wait_ready(timeout):
            raise RuntimeError(f"NATS cluster not ready in {timeout} s\n{self.logs()}")

    def wait_ready(self, timeout: float = READY_TIMEOUT, nodes: list[NatsNode] | None = None) -> bool:
        """Every given running node takes MQTT connections and JetStream has a meta leader (bounded)."""
        deadline = time.monotonic() + timeout
        for node in nodes or [n for n in self.nodes if n.running()]:
            left = deadline - time.monotonic()
            if left <= 0 or not wait_for_port(self.host, node.mqtt_port, left, alive=node.proc):
                return False
        while time.monotonic() < deadline:
            if all(self._js_ready(n) for n in (nodes or [n for n in self.nodes if n.running()])):
                return True
            time.sleep(0.2)
        return False

    def _js_ready(self, node: NatsNode) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{node.monitor_port}/jsz", timeout=2) as rsp:
                info = json.load(rsp)
        except OSError:
            return False
        meta = info.get("meta_cluster") or {}
        return bool(meta.get("leader")) and info.get("disabled") is not True

    def wait_subscribable(self, node: NatsNode, timeout: float = READY_TIMEOUT) -> bool:
        """A fresh clean session on ``node`` gets a QoS 1 subscription granted (bounded).

        For some seconds after a node dies, JetStream elects new leaders and the
        server refuses new QoS 1 subscriptions (SUBACK failure, its log says a
        consumer create timed out); a health check like this one keeps clients
        away until that is over.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            granted = threading.Event()
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{node.name}",
                                 protocol=mqtt.MQTTv311, clean_session=True)
            client.on_connect = lambda c, *_: c.subscribe("edgebus-probe/x", 1)
            client.on_subscribe = lambda _c, _u, _m, codes, _p, ev=granted: (
                ev.set() if all(not code.is_failure for code in codes) else None)
            try:
                client.connect(self.host, node.mqtt_port, keepalive=10)
            except OSError:
                time.sleep(0.2)
                continue
            client.loop_start()
            try:
                if granted.wait(min(6.0, max(0.1, deadline - time.monotonic()))):
                    return True
            finally:
                client.disconnect()
                client.loop_stop()
        return False

    def kill(self, node: NatsNode) -> None:
        """``kill -9`` one node and reap it."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after STOP_TIMEOUT) and remove the directory."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(STOP_TIMEOUT)
        _LIVE.discard(self)
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {n.name}\n{n.log.read_text(errors='replace')[-tail:]}"
                         for n in self.nodes if n.log.exists())

    def __hash__(self) -> int:
        return id(self)


def require_nats_server() -> str:
    """The nats-server binary, or skip (fail when EDGEBUS_REQUIRE_CLUSTER_BROKER=1)."""
    binary = find_nats_server()
    if binary is not None:
        return binary
    message = "no nats-server on PATH or in /usr/sbin (apt-get install nats-server)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {message}", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def running_cluster(binary: str, size: int = 3) -> Iterator[NatsCluster]:
    """A started cluster in a fresh temporary directory; always stopped and removed afterwards."""
    cluster = NatsCluster(binary, Path(tempfile.mkdtemp(prefix="edgebus-nats-")), size=size)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    with running_cluster(require_nats_server()) as cluster:
        yield cluster


def main() -> int:
    binary = find_nats_server()
    if binary is None:
        print("no nats-server (apt-get install nats-server)")
        return 1
    with running_cluster(binary) as cluster:
        for node in cluster.nodes:
            pid = node.proc.pid if node.proc else "-"
            print(f"{node.name}: mqtt {cluster.host}:{node.mqtt_port} pid {pid}")
        with contextlib.suppress(KeyboardInterrupt):
            while all(n.running() for n in cluster.nodes):
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
