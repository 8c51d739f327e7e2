"""The system's Mosquitto as a child process, configured for one machine: ``edge-broker run --mosquitto``.

The switch from the embedded broker to Mosquitto for what the embedded one
cannot do (MQTT 5, ``$share``, speed; :mod:`broker.guarantees`): the same
data directory and the same user and password (``credentials.json``), so
clients configured for the embedded broker connect unchanged. The
configuration is :class:`broker.mosquitto_config.MosquittoSite`'s (no
anonymous clients, persistence, raised queue limits), written into
``<data_dir>/mosquitto/`` on every start; the user is a coordinator user
(everything under the topic root and Home Assistant's).

Mosquitto is not a Python package: it comes from the system
(``apt-get install mosquitto``, ``brew install mosquitto``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from broker.credentials import Credentials
from broker.mosquitto_config import MosquittoSite, SiteFiles
from schemas.errors import BrokerError

__all__ = ["CONFIG_DIR", "LocalMosquitto", "find_mosquitto"]

logger = logging.getLogger(__name__)

#: Where the generated configuration and Mosquitto's persistence live, under the data dir.
CONFIG_DIR = "mosquitto"
_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
_INSTALL_HINT = ("install it: sudo apt-get install mosquitto (Debian, Ubuntu, Raspberry Pi OS), "
                 "sudo dnf install mosquitto, or brew install mosquitto")


def find_mosquitto() -> str | None:
    """The ``mosquitto`` program: PATH first, then the sbin directories packages put it in."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class LocalMosquitto:
    """``mosquitto -c <generated conf>`` on ``host:port`` with ``credentials`` as its one user.

    ``port=0`` picks a free port. :meth:`start` returns once the port accepts
    connections; :meth:`stop` ends Mosquitto with SIGTERM (it saves its
    persistence file then).
    """

    def __init__(self, host: str, port: int, data_dir: Path, credentials: Credentials, *,
                 binary: str | None = None, start_timeout: float = 10.0) -> None:
        self.host = host
        self.connect_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        self.port = port or _free_port(self.connect_host)
        self.data_dir = Path(data_dir)
        self.directory = self.data_dir / CONFIG_DIR
        self.credentials = credentials
        self.binary = binary
        self.start_timeout = start_timeout
        self.log_path = self.directory / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> SiteFiles:
        """Write ``mosquitto.conf``, ``passwd`` and ``acl`` into ``<data_dir>/mosquitto``."""
        # As root Mosquitto drops to user "mosquitto", who cannot read a private data dir.
        run_as = "root" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        site = MosquittoSite(listener_host=self.host, port=self.port,
                             data_dir=self.directory / "data", coordinators=[self.credentials],
                             run_as_user=run_as)
        return site.write(self.directory)

    def start(self) -> None:
        binary = self.binary or find_mosquitto()
        if binary is None:
            raise BrokerError(f"--mosquitto runs the system's mosquitto, which is not installed; "
                              f"{_INSTALL_HINT}. Without it, edge-broker run starts the embedded "
                              "broker.")
        if _accepts(self.connect_host, self.port):
            raise BrokerError(f"port {self.port} on {self.host or '*'} is already in use; pass "
                              "--port (0 for any free port), or stop what listens there")
        files = self.write_config()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([binary, "-c", str(files.conf)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log)
        deadline = time.monotonic() + self.start_timeout
        while not _accepts(self.connect_host, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto did not start on {self.host}:{self.port}; its "
                                  f"log ({self.log_path}):\n{self.log_tail()}")
            time.sleep(0.05)
        logger.info("mosquitto %s listening on %s:%d (config %s)", binary, self.host, self.port,
                    files.conf)

    def exit_code(self) -> int | None:
        """Mosquitto's exit code once it has ended by itself, else None."""
        return self._proc.poll() if self._proc is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if Mosquitto has not ended within ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
