"""A throw-away Mosquitto on a free loopback port for the benchmarks (anonymous, no persistence)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_mosquitto(workdir: Path, *, nodelay: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    """Mosquitto listening on 127.0.0.1 (queues raised so QoS 1 is never dropped); (process, port).

    ``nodelay`` turns Nagle off (``set_tcp_nodelay``), for request/reply traffic rather than bulk.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    + ("set_tcp_nodelay true\n" if nodelay else "")
                    + "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
