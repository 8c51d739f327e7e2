"""Brokers the battery can run against besides the two edgebus ships with.

Candidates live in virtualenvs of their own (they are not edgebus
dependencies), so each is started as a child process of that venv's Python
on a free port. ``EDGEBUS_CONFORMANCE_CANDIDATES`` names the ones to add to
the battery, each as ``kind=python``::

    EDGEBUS_CONFORMANCE_CANDIDATES=iotcore=/work/venv-iotcore/bin/python \\
        pytest tests/conformance

Known kinds:

* ``iotcore`` - rumqttd 0.20 compiled into the iotcore 0.4 wheel; it listens
  for MQTT 3.1.1 and MQTT 5 on two ports, with a static user/password table,
  no topic ACLs and no persistence;
* ``amqtt_db`` - the embedded broker's amqtt 0.12.1 without edgebus's fixes,
  with amqtt's own session persistence plugin (what the embedded broker was
  before ``broker/amqtt_fixes``);
* ``mqttd`` - mqttd 0.5, a pure-Python MQTT 3.1.1/5 server without password
  checks (measured and dismissed: it fails most of the battery).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from broker.credentials import generate_password
from tests.brokers import ADMIN_USER, READY_TIMEOUT, RunningBroker, end_process, free_port, wait_for_port

__all__ = ["CANDIDATE_KINDS", "IotcoreUnderTest", "MqttdUnderTest", "candidate",
           "configured_candidates"]

_ENV = "EDGEBUS_CONFORMANCE_CANDIDATES"


class CommandBroker(RunningBroker):
    """A broker that is one child process of ``python``; ``stop()`` is SIGTERM, ``kill()`` SIGKILL."""

    def __init__(self, workdir: Path, python: str) -> None:
        self.python = python
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
            # The repository on the child's path too (the amqtt probe imports edgebus).
            repo = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                filter(None, [repo, os.environ.get("PYTHONPATH")]))}
            self._proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if not wait_for_port(self.host, self.port, READY_TIMEOUT, alive=self._proc):
            self.kill()
            raise RuntimeError(f"{self.kind} did not listen on {self.port}: {self.log_tail()}")

    def _signal(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            end_process(proc, sig)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


class IotcoreUnderTest(CommandBroker):
    """``python -m iotcore --config rumqttd.toml``: rumqttd 0.20 as iotcore 0.4 packs it."""

    kind = "iotcore"
    speaks_mqtt5 = True

    def __init__(self, workdir: Path, python: str) -> None:
        super().__init__(workdir, python)
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


class MqttdUnderTest(CommandBroker):
    """mqttd 0.5 (``MQTTApp``): MQTT 3.1.1 and 5 in pure Python, with no password check.

    It has no way to verify a user name and password, so the credentials the
    battery sends are accepted unchecked; it keeps nothing across a restart.
    """

    kind = "mqttd"
    speaks_mqtt5 = True

    def command(self) -> list[str]:
        script = f"from mqttd import MQTTApp; MQTTApp(host={self.host!r}, port={self.port}).run()"
        return [self.python, "-c", script]


_AMQTT_DB_SCRIPT = """
import asyncio, signal, sys
from amqtt.broker import Broker
from pwdlib.hashers.argon2 import Argon2Hasher
host, port, user, password, workdir = sys.argv[1:6]
with open(f"{workdir}/passwd", "w") as f:
    f.write(f"{user}:{Argon2Hasher().hash(password)}\\n")
config = {
    "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
    "plugins": {
        "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": f"{workdir}/passwd"},
        "amqtt.contrib.persistence.SessionDBPlugin": {
            "connection": f"sqlite+aiosqlite:///{workdir}/sessions.db",
            "clear_on_shutdown": False},
    },
}
async def main():
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await asyncio.wait_for(broker.shutdown(), 5)
asyncio.run(main())
"""


class AmqttSessionDbUnderTest(CommandBroker):
    """amqtt 0.12.1 with its own persistence (``amqtt.contrib.persistence.SessionDBPlugin``).

    The plugin needs SQLAlchemy and aiosqlite (amqtt's ``contrib`` extra, which
    also pulls python-ldap, a source build that needs the LDAP headers; so the
    venv gets ``amqtt sqlalchemy[asyncio] aiosqlite`` by name).
    """

    kind = "amqtt_db"
    speaks_mqtt5 = False

    def command(self) -> list[str]:
        return [self.python, "-c", _AMQTT_DB_SCRIPT, self.host, str(self.port), self.username,
                self.password, str(self.workdir)]


CANDIDATE_KINDS: dict[str, type[CommandBroker]] = {
    "iotcore": IotcoreUnderTest, "mqttd": MqttdUnderTest, "amqtt_db": AmqttSessionDbUnderTest}


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
