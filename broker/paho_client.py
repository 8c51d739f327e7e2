"""paho's MQTT client with fewer system calls per message, for the session's connections.

At thousands of QoS 1 messages a second, paho's per-message system calls
(each one lets go of the GIL and must win it back from the threads that
decode and store) cost more than the messages themselves. Two changes, both
invisible on the wire:

* the connection is a :class:`~broker.buffered_socket.BufferedSocket` (one
  ``recv`` per burst of packets; acks sent together);
* paho writes a byte to an internal socket pair for every packet it queues,
  to wake its own ``select`` in case another thread queued it. When the
  network thread queues a packet itself (every PUBACK), there is nothing to
  wake: its next loop iteration writes what is queued. Those wake-ups are
  skipped; packets queued by other threads still wake it.

Both hook into paho's private ``_create_socket`` and ``_sockpairW``, checked by
``tests/test_buffered_socket.py`` against the pinned paho (``<3``).
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from broker.buffered_socket import BufferedSocket

__all__ = ["FewerSyscallsClient"]


class _LoopWaker:
    """paho's wake-up socket, silent when the network thread wakes itself."""

    def __init__(self, sock: Any, client: FewerSyscallsClient) -> None:
        self._sock = sock
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def send(self, data: bytes) -> int:
        if threading.get_ident() == self._client.network_thread:
            return len(data)
        sent: int = self._sock.send(data)
        return sent

    def close(self) -> None:
        self._sock.close()


class FewerSyscallsClient(mqtt.Client):
    """``paho.mqtt.client.Client`` on a buffered socket, without self-addressed wake-ups."""

    network_thread: int | None = None

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        self.network_thread = threading.get_ident()
        waker = self._sockpairW
        if waker is not None and not isinstance(waker, _LoopWaker):
            self._sockpairW = _LoopWaker(waker, self)  # type: ignore[assignment]
        return super().loop(timeout)
