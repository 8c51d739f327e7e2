"""A loopback TCP proxy whose link can be cut and restored, to fake a network outage."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every link and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut_requests: list[threading.Event] = []
        self._up = threading.Event()
        self._up.set()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Drop every link at once (both sides see a reset) and refuse new ones."""
        self._up.clear()
        done = threading.Event()
        self._cut_requests.append(done)
        if not done.wait(5):
            raise RuntimeError("proxy thread did not cut the links")

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self.cut()
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        self._listener.setblocking(False)
        sel.register(self._listener, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        while not self._closing.is_set():
            for key, _ in sel.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    try:
                        client, _addr = self._listener.accept()
                    except OSError:
                        continue
                    if not self._up.is_set():
                        client.close()
                        continue
                    try:
                        upstream = socket.create_connection(self.target, timeout=2)
                    except OSError:
                        client.close()
                        continue
                    for s in (client, upstream):
                        s.setblocking(False)
                    peers[client], peers[upstream] = upstream, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(upstream, selectors.EVENT_READ)
                    continue
                other = peers.get(sock)
                try:
                    data = sock.recv(65536)
                    if not data or other is None:
                        raise OSError("closed")
                    other.setblocking(True)
                    other.sendall(data)
                    other.setblocking(False)
                except OSError:
                    for s in (sock, other):
                        if s is None:
                            continue
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(s)
                        peers.pop(s, None)
                        s.close()
            while self._cut_requests:
                for s in list(peers):
                    sel.unregister(s)
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
                peers.clear()
                self._cut_requests.pop().set()
        sel.close()
