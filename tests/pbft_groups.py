"""Signed BFT group files for tests, made the fleet's way (edge-flash keys init, edge-bus bft sign), and
a group of real `edge-bus bft serve` replica processes on a test Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.bft import BftClient, load_group, load_signer, sign_group
from broker.bft.cli import bft_main
from broker.bft.group import load_private_key
from broker.credentials import Credentials
from broker.session import BusConfig
from broker.trust import load_trusted
from firmware_tools.keys import init_keys
from protocols.ota.trust import KeyRing, TrustedKey
from tests.brokers import MosquittoUnderTest

OPERATOR = "operator"
REPLICAS = ("r0", "r1", "r2", "r3")
DEADLINE = 60.0


def make_group(tmp: Path, replicas: Sequence[str], clients: Sequence[str], *, name: str = "fleet",
               extra: Mapping[str, object] | None = None) -> Path:
    """Keys per identity, one trusted-keys file, the group file and its signature by the operator's key.

    The trust root is ``trust_root(tmp)`` (the operator's keys directory).
    """
    kids: dict[str, str] = {}
    ring: list[TrustedKey] = []
    for ident in (*replicas, *clients):
        if not (tmp / "keys" / ident).exists():
            init_keys(tmp / "keys" / ident)
        ring += load_trusted(tmp / "keys" / ident).keys
        kids[ident] = ring[-1].id
    (tmp / "trusted_keys.json").write_bytes(KeyRing(tuple(ring)).to_bytes())
    doc = {"group": name, "replicas": list(replicas), "keys": kids, "trusted_keys": "trusted_keys.json",
           "tick_ms": 10, "view_change_ms": 500, "resend_ms": 50, **(extra or {})}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(doc))
    if not trust_root(tmp).exists():
        init_keys(trust_root(tmp))
    sign_group(path, load_private_key(trust_root(tmp)))
    return path


@dataclass
class Group:
    broker: MosquittoUnderTest
    tmp: Path
    path: Path
    procs: dict[str, subprocess.Popen[bytes]]
    logins: Mapping[str, Credentials] = field(default_factory=dict)
    """Broker login per identity (e.g. device users); the broker's admin user for the others."""

    def login(self, ident: str) -> Credentials:
        return self.logins.get(ident) or Credentials(self.broker.username, self.broker.password)

    def bus(self, name: str) -> BusConfig:
        b, login = self.broker, self.login(name)
        return BusConfig(host=b.host, port=b.port, username=login.username, password=login.password,
                         client_id=name, clean_start=True, keepalive=5)

    def args(self, ident: str = OPERATOR) -> list[str]:
        b = self.broker
        return ["--group", str(self.path), "--trust", str(trust_root(self.tmp)), "--host", b.host,
                "--port", str(b.port), "--username", self.login(ident).username]

    def start(self, replica: str, *flags: str) -> None:
        log = (self.tmp / f"{replica}.log").open("ab")
        env = {**os.environ, "EDGEBUS_BROKER_PASSWORD": self.login(replica).password}
        self.procs[replica] = subprocess.Popen(
            [sys.executable, "-m", "broker.bus_cli", "bft", "serve", *self.args(replica), "--id", replica,
             "--key", str(self.tmp / "keys" / replica), "--data", str(self.tmp / "data"),
             "--log-level", "INFO", *flags],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )

    def stop_all(self) -> None:
        """SIGTERM to every replica still running; kill -9 after 10 s."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def wait_up(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Every replica has published its status: connected and subscribed (slow on a loaded host)."""
        wait_for(lambda: sorted(self.statuses(capsys)) == list(REPLICAS), "all four replicas up")

    def client(self, ident: str = "coord") -> BftClient:
        group = load_group(self.path, trust_root(self.tmp))
        return BftClient(group, load_signer(ident, self.tmp / "keys" / ident), self.bus(ident)).start()

    def statuses(self, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
        capsys.readouterr()
        rc = bft_main(["status", *self.args(), "--json", "--timeout", "3"])
        docs: dict[str, dict[str, object]] = json.loads(capsys.readouterr().out)
        assert rc == (0 if docs else 2)
        return docs


def wait_for(cond: object, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def trust_root(tmp: Path) -> Path:
    return tmp / "keys" / OPERATOR
