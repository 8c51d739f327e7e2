"""SIGSTOP a lock holder past its lease: the fenced resource refuses its late writes (Jepsen lock-set).

The holder is a separate process (this module run as ``__main__``); the
resource lives in the test process behind two MQTT topics and checks every
write's fencing token with :class:`protocols.locks.FencedResource`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.coordination import LockClient
from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from protocols.locks import FencedResource
from tests.brokers import MosquittoUnderTest

LOCK = "camera-7/ptz"
WRITE_TOPIC = "edgebus/_sys/fence/test/write"
NODES = ["n1", "n2", "n3"]


def _bus(host: str, port: int, user: str | None, password: str | None, client_id: str) -> BusConfig:
    return BusConfig(host=host, port=port, username=user, password=password, client_id=client_id,
                     clean_start=True)


class LockSet:
    """The protected resource: a set updated only by writes whose token is not stale."""

    def __init__(self, session: BusSession) -> None:
        self.fence = FencedResource()
        self.accepted: list[tuple[str, int, str]] = []
        self.rejected: list[tuple[str, int, str]] = []
        self._session = session
        self._lock = threading.Lock()
        session.subscribe(WRITE_TOPIC, self._on_write)

    def _on_write(self, msg: ReceivedMessage) -> None:
        w = json.loads(msg.payload)
        with self._lock:
            ok = self.fence.admit(LOCK, w["token"])
            (self.accepted if ok else self.rejected).append((w["writer"], w["token"], w["value"]))
        answer = json.dumps({"value": w["value"], "ok": ok})
        self._session.publish(f"edgebus/_sys/fence/test/ack/{w['writer']}", answer)


def holder_main() -> None:
    """Acquire the lock, then write under its token every 50 ms, reporting each answer on stdout."""
    host, port, user, group = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    bus = _bus(host, port, user, os.environ.get("EDGEBUS_BROKER_PASSWORD"), "holder-bus")
    answers: queue.SimpleQueue[dict[str, object]] = queue.SimpleQueue()
    with LockClient.connect(bus, group, "holder", ttl_ms=600) as client:
        session = client.raft.session
        session.subscribe("edgebus/_sys/fence/test/ack/holder", lambda m: answers.put(json.loads(m.payload)))
        token = client.acquire(LOCK, timeout=10)
        print(json.dumps({"token": token}), flush=True)
        for i in range(400):  # a careless holder: it never checks session_lost
            session.publish(WRITE_TOPIC, json.dumps({"writer": "holder", "token": token, "value": f"h{i}"}))
            answer = answers.get(timeout=10)
            print(json.dumps({**answer, "lost": client.session_lost.is_set()}), flush=True)
            threading.Event().wait(0.05)


@pytest.fixture
def stack(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[tuple[MosquittoUnderTest, LockSet,
                                                                                   LockClient]]:
    b = mosquitto_broker
    cluster = LocalCluster(_bus(b.host, b.port, b.username, b.password, "unused"), "locks", tmp_path / "raft")
    session = BusSession(_bus(b.host, b.port, b.username, b.password, "resource"))
    watcher = GroupWatcher(session, "locks")
    resource = LockSet(session)
    session.start()
    assert session.wait_connected(10)
    cluster.start()
    client: LockClient | None = None
    try:
        assert watcher.leader(NODES, timeout=15) is not None
        bus = _bus(b.host, b.port, b.username, b.password, "unused")
        client = LockClient.connect(bus, "locks", "newholder", ttl_ms=5000)
        yield b, resource, client
    finally:
        if client is not None:
            client.close()
        cluster.stop()
        session.stop(flush_timeout=0)


def _lines(proc: subprocess.Popen[str]) -> queue.SimpleQueue[dict[str, object]]:
    out: queue.SimpleQueue[dict[str, object]] = queue.SimpleQueue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                out.put(json.loads(line))
    threading.Thread(target=pump, daemon=True).start()
    return out


def test_paused_holder_is_fenced_off(stack: tuple[MosquittoUnderTest, LockSet, LockClient]) -> None:
    b, resource, client = stack
    env = {**os.environ, "EDGEBUS_BROKER_PASSWORD": b.password}
    proc = subprocess.Popen([sys.executable, "-m", "tests.test_coordination_fencing", "holder", b.host,
                             str(b.port), b.username, "locks"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = _lines(proc)
        old_token = int(str(lines.get(timeout=20)["token"]))
        assert lines.get(timeout=10)["ok"] is True  # its writes are accepted while it holds the lock
        proc.send_signal(signal.SIGSTOP)
        # Blocks until the paused holder's lease lapses and the lock is granted to us.
        new_token = client.acquire(LOCK, timeout=20)
        assert new_token > old_token
        resource._on_write(ReceivedMessage(WRITE_TOPIC, json.dumps(
            {"writer": "newholder", "token": new_token, "value": "n0"}).encode(), 1, False))
        proc.send_signal(signal.SIGCONT)
        # The holder wakes up still believing it holds the lock: every write it makes now is refused.
        # (One write may have been in flight when it was stopped and accepted before our write.)
        late = [lines.get(timeout=10) for _ in range(4)]
        assert all(a["ok"] is False for a in late[1:]), late
        assert client.release(LOCK, new_token)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(5)
    accepted_tokens = [t for _, t, _ in resource.accepted]
    assert accepted_tokens == sorted(accepted_tokens)  # the set never took an older token after a newer one
    assert ("newholder", new_token, "n0") in resource.accepted
    assert all(w == "holder" and t == old_token for w, t, _ in resource.rejected)
    assert resource.rejected


if __name__ == "__main__" and sys.argv[1:2] == ["holder"]:
    holder_main()
