"""uvicorn serving the app on a thread of its own, started and stopped with the coordinator.

The listening socket is bound in :meth:`HttpServer.start`, in the caller's
thread, so a taken port or a bad address fails there with a clear error
instead of in the background; port 0 picks a free port (:attr:`port` tells
which). The event loop, every WebSocket and every request run on the server's
thread (blocking route functions on its thread pool): ingest never waits for
any of them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from coordinator.http.config import HttpConfig
from schemas.errors import BusError

__all__ = ["HttpServer"]

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


def _bind(host: str, port: int, send_buffer: int | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:  # accepted connections inherit it (Linux)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BusError(f"the HTTP API cannot listen on {host}:{port}: {exc.strerror or exc}; "
                       "pick another with --http-port or [http] port") from exc
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """One uvicorn server for ``app`` on ``config.host``:``config.port``.

    ``send_buffer`` caps each connection's kernel send buffer (bytes; default: the kernel's
    autotuning, up to megabytes), so a client that stops reading fills it, and then its
    live-feed queue, sooner.
    """

    def __init__(self, app: FastAPI, config: HttpConfig, *, send_buffer: int | None = None) -> None:
        self.config = config
        self.send_buffer = send_buffer
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="websockets-sansio",
            # No per-message compression: deflating every message for every client costs CPU on
            # a small box, and the feed's JSON is small.
            ws_max_size=64 * 1024, ws_per_message_deflate=False, ws_ping_interval=20.0, ws_ping_timeout=20.0,
            timeout_graceful_shutdown=2,
            ssl_certfile=str(config.tls_certfile) if config.tls_certfile else None,
            ssl_keyfile=str(config.tls_keyfile) if config.tls_keyfile else None, server_header=False))
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        return self.config.url(self.port)

    def start(self) -> HttpServer:
        """Bind, serve on a thread, and return once requests are answered (BusError if not)."""
        self._socket = _bind(self.config.host, self.config.port, self.send_buffer)
        self.port = int(self._socket.getsockname()[1])
        sock = self._socket
        self._thread = threading.Thread(target=lambda: self._uvicorn.run(sockets=[sock]),
                                        name="edgebus-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise BusError(f"the HTTP API did not start on {self.config.host}:{self.port}")
            time.sleep(0.01)
        logger.info("HTTP API and dashboard on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (WebSockets with 1012, going away) and end the thread."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._uvicorn.force_exit = True
                self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
