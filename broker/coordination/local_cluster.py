"""A Raft group of separate OS processes on one machine, for fault tests and the benchmark.

Each node is ``edge-bus raft serve`` (run as ``python -m broker.bus_cli``); :class:`GroupWatcher`
follows the nodes' retained status topics so callers can wait for a leader
without sleeping blindly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from protocols.coordination.topics import CoordinationTopics

__all__ = ["GroupWatcher", "LocalCluster"]


@dataclass
class LocalCluster:
    """Start, kill and restart the nodes of one group; ``bus`` says how they reach the broker."""

    bus: BusConfig
    group: str
    data_dir: Path
    nodes: tuple[str, ...] = ("n1", "n2", "n3")
    tick_ms: int = 10
    election_ticks: int = 15
    log_level: str = "WARNING"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, node: str | None = None, *, join: bool = False) -> None:
        """Start ``node`` (default: every bootstrap node); ``join``: as a new member of the running group,
        which then still has to be added (:meth:`RaftClient.add_member`)."""
        for n in [node] if node else self.nodes:
            how = ["--join"] if join else ["--peers", ",".join(self.nodes)]
            cmd = [sys.executable, "-m", "broker.bus_cli", "raft", "serve", "--group", self.group,
                   "--node", n, *how, "--data", str(self.data_dir), "--host", self.bus.host,
                   "--port", str(self.bus.port), "--root", self.bus.root, "--tick-ms", str(self.tick_ms),
                   "--election-ticks", str(self.election_ticks), "--log-level", self.log_level]
            if self.bus.username:
                cmd += ["--username", self.bus.username]
            env = {**os.environ, "EDGEBUS_BROKER_PASSWORD": self.bus.password or ""}
            self.procs[n] = subprocess.Popen(cmd, env=env)

    def signal(self, node: str, sig: int) -> None:
        self.procs[node].send_signal(sig)

    def kill(self, node: str) -> None:
        """kill -9: no goodbye, no flush; the broker publishes the node's will."""
        proc = self.procs[node]
        proc.kill()
        proc.wait(5)

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


class GroupWatcher:
    """The latest status each node of a group published (retained JSON)."""

    def __init__(self, session: BusSession, group: str) -> None:
        self.topics = CoordinationTopics(session.topics, group)
        self._cond = threading.Condition()
        self.statuses: dict[str, dict[str, Any]] = {}
        session.subscribe(self.topics.all_node_status(), self._on_status)

    def _on_status(self, msg: ReceivedMessage) -> None:
        if not msg.payload:  # the leader cleared a removed node's status
            with self._cond:
                self.statuses.pop(msg.topic.split("/")[-2], None)
                self._cond.notify_all()
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self._cond:
            self.statuses[str(body["node"])] = body
            self._cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Block until ``predicate(statuses)`` holds (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.statuses):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def leader(self, among: list[str], timeout: float, not_: str | None = None) -> str | None:
        """The leader that every live node in ``among`` agrees on (a quorum of them at least)."""
        found: list[str] = []

        def agreed(st: dict[str, dict[str, Any]]) -> bool:
            live = [st[n] for n in among if n in st]
            leaders = [s["node"] for s in live if s["role"] == "leader" and s["node"] != not_]
            if len(leaders) != 1:
                return False
            followers = [s for s in live if s.get("leader") == leaders[0]]
            if len(followers) * 2 <= len(among):
                return False
            found.append(leaders[0])
            return True

        return found[-1] if self.wait_for(agreed, timeout) else None
