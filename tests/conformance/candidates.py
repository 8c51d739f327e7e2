"""Brokers the battery can run against besides the two edgebus ships with.

Candidates live in virtualenvs of their own (they are not edgebus
dependencies), so each is started as a child process of that venv's Python
on a free port. ``EDGEBUS_CONFORMANCE_CANDIDATES`` names the ones to add to
the battery, each as ``kind=python``::

    EDGEBUS_CONFORMANCE_CANDIDATES=iotcore=/work/venv-iotcore/bin/python \\
        pytest tests/conformance

Known kinds: ``iotcore`` (rumqttd compiled into a wheel; it listens for
MQTT 3.1.1 and MQTT 5 on two ports, with a static user/password table and
no persistence).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from broker.credentials import generate_password
from tests.brokers import ADMIN_USER, READY_TIMEOUT, STOP_TIMEOUT, RunningBroker, free_port, wait_for_port

__all__ = ["CANDIDATE_KINDS", "IotcoreUnderTest", "candidate", "configured_candidates"]

_ENV = "EDGEBUS_CONFORMANCE_CANDIDATES"


class CommandBroker(RunningBroker):
    """A broker that is one child process; ``stop()`` is SIGTERM, ``kill()`` SIGKILL."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.username = ADMIN_USER
        self.password = generate_password()
        self.log_path = self.workdir / f"{self.kind}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self.command(), cwd=self.workdir,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if not wait_for_port(self.host, self.port, READY_TIMEOUT, alive=self._proc):
            self.kill()
            raise RuntimeError(f"{self.kind} did not listen on {self.port}: {self.log_tail()}")

    def _signal(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


class IotcoreUnderTest(CommandBroker):
    """``python -m iotcore --config rumqttd.toml``: rumqttd 0.20 as iotcore 0.4 packs it."""

    kind = "iotcore"
    speaks_mqtt5 = True

    def __init__(self, workdir: Path, python: str) -> None:
        super().__init__(workdir)
        self.python = python
        self.mqtt5_port = free_port()
        conf = self.workdir / "rumqttd.toml"
        conf.write_text(self._config())

    def _config(self) -> str:
        # next_connection_delay_ms throttles accepts (rumqttd sleeps that long after each).
        def listener(version: str, port: int) -> str:
            return (f'[{version}.1]\nname = "{version}-1"\nlisten = "{self.host}:{port}"\n'
                    "next_connection_delay_ms = 0\n"
                    f"[{version}.1.connections]\nconnection_timeout_ms = 60000\n"
                    "max_payload_size = 268435455\nmax_inflight_count = 100\n"
                    "dynamic_filters = true\n"
                    f'[{version}.1.connections.auth]\n"{self.username}" = "{self.password}"\n')
        return ("id = 0\n[router]\nid = 0\nmax_connections = 10010\n"
                "max_outgoing_packet_count = 200\nmax_segment_size = 104857600\n"
                "max_segment_count = 10\n"
                + listener("v4", self.port) + listener("v5", self.mqtt5_port))

    def command(self) -> list[str]:
        return [self.python, "-m", "iotcore", "--config", str(self.workdir / "rumqttd.toml"),
                "--log-level", "WARNING"]


CANDIDATE_KINDS = {"iotcore": IotcoreUnderTest}


def configured_candidates() -> dict[str, str]:
    """``{kind: python}`` from ``EDGEBUS_CONFORMANCE_CANDIDATES`` (empty when unset)."""
    found: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in os.environ.get(_ENV, "").split(","))):
        kind, _, python = item.partition("=")
        if kind not in CANDIDATE_KINDS or not python:
            raise RuntimeError(f"{_ENV}: expected kind=python with kind in "
                               f"{', '.join(CANDIDATE_KINDS)}, got {item!r}")
        found[kind] = python
    return found


def candidate(kind: str, workdir: Path) -> RunningBroker:
    return CANDIDATE_KINDS[kind](workdir, configured_candidates()[kind])
