"""A socket wrapper that gives paho one read per burst of packets and one write per burst of acks.

paho reads each packet with several small ``recv`` calls (one for the command
byte, one per remaining-length byte, one for the body) and writes each PUBACK
with its own ``send``. At thousands of QoS 1 messages a second that is six
system calls a message, each of which lets go of the GIL and has to win it
back from the threads that decode and store: the receive path, not the
network, became what limited a coordinator.

:class:`BufferedSocket` serves paho's small reads from one large ``recv``
and holds back the tiny packets (acks, pings) that paho's network thread
writes while it works through what it read, sending them together before
that thread could block: when its read buffer runs dry, and whenever paho
asks :meth:`pending` (which paho's loop does before every ``select``). Writes
from any other thread, and anything larger than an ack, first flush what is
held and then go out directly, so ordering on the wire is kept.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from typing import Any

__all__ = ["BufferedSocket"]

READ_SIZE = 65_536
SMALL_WRITE = 8  # PUBACK/PUBREC/PUBREL/PUBCOMP (4 bytes in 3.1.1; 4+ in 5), PINGREQ (2)
# About ten acks: half of Mosquitto's default window of 20 unacknowledged messages to a subscriber,
# so the broker always has room to send while we hold some (holding more measured slower: the broker
# then waits for us; bench/ingest.py).
HOLD_LIMIT = 40


class BufferedSocket:
    """Wraps a connected (possibly TLS) socket; everything not defined here goes to the socket."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._read = b""
        self._read_at = 0
        self._held = bytearray()
        self._lock = threading.Lock()
        self._reader: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    @property
    def raw(self) -> Any:
        """The wrapped socket (for socket options)."""
        return self._sock

    def recv(self, size: int) -> bytes:
        self._reader = threading.get_ident()
        available = len(self._read) - self._read_at
        if not available:
            self.flush()
            data: bytes = self._sock.recv(max(size, READ_SIZE))
            if len(data) <= size:
                return data
            self._read, self._read_at, available = data, 0, len(data)
        start = self._read_at
        end = start + min(size, available)
        chunk = self._read[start:end]
        if end == len(self._read):
            self._read, self._read_at = b"", 0
        else:
            self._read_at = end
        return chunk

    def pending(self) -> int:
        """Bytes readable without waiting; paho skips its ``select`` when there are some.

        Before reporting none, what is held is sent: paho is about to wait.
        """
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        buffered = len(self._read) - self._read_at + inner
        if not buffered:
            try:
                self.flush()
            except OSError:
                return 0  # a broken connection: the read that follows reports it
            with self._lock:
                if self._held:  # the kernel's send buffer is full: keep paho polling until it drains
                    return 1
        return buffered

    def send(self, data: bytes | bytearray | memoryview) -> int:
        with self._lock:
            if len(data) <= SMALL_WRITE and threading.get_ident() == self._reader:
                self._held += data
                if len(self._held) < HOLD_LIMIT:
                    return len(data)
                self._flush_locked()
                return len(data)
            self._flush_locked()
            if self._held:
                raise BlockingIOError("earlier writes are still waiting for the socket")
            sent: int = self._sock.send(data)
            return sent

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            self._flush_locked()
            self._sock.sendall(data)

    def flush(self) -> None:
        """Send what is held (as much as the socket takes now)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        while self._held:
            try:
                sent = self._sock.send(self._held)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            del self._held[:sent]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.flush()
        self._sock.close()
