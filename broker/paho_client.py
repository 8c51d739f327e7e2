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

Both hook into paho's private ``_create_socket`` and ``_sockpairW``, written
against the paho pinned exactly in ``pyproject.toml`` and checked against it by
``tests/test_paho_client.py``. Should a paho release move them, the hooks fall
away on their own (paho's own socket and wake-ups are used, which work, only
slower) and :meth:`FewerSyscallsClient.unengaged_hooks` names them, which the
session logs as a warning at its first connection.

Why paho and not gmqtt (37k/21k msg/s QoS 0/1 client to client against paho's
13k/9.7k, DESIGN.md) on the coordinator's ingest path: through the whole path
(``bench/ingest.py --client gmqtt``, same Mosquitto, runs back to back on the
shared 2 cores, 2026-12) gmqtt gained nothing clear: paho 121k and 109k
samples/s (0.42 and 0.42 of mosquitto_sub), gmqtt acknowledging after the
handler 130k and 138k (0.44, 0.39), acknowledging before it 116k and 92k (0.63,
0.59); decoding only, paho 0.91 and 0.70, gmqtt 0.90 and 0.41. Decoding, scoring
and storing hold the GIL, not the client. gmqtt would also bring an asyncio loop
thread, a task per message to acknowledge after the handler (0.8 never sends the
PUBACK after a plain function), and reconnect, SUBACK, TLS and the outbox to
build again.
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from broker.buffered_socket import BufferedSocket

__all__ = ["SOCKET_FACTORY", "WAKE_SOCKET", "FewerSyscallsClient"]

#: paho's private method that opens the connection's socket (overridden).
SOCKET_FACTORY = "_create_socket"
#: paho's private attribute holding the write end of its wake-up socket pair (wrapped).
WAKE_SOCKET = "_sockpairW"


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
        rc = super().loop(timeout)
        # After paho's loop: its first one is what creates the socket pair.
        waker = getattr(self, WAKE_SOCKET, None)
        if waker is not None and not isinstance(waker, _LoopWaker):
            setattr(self, WAKE_SOCKET, _LoopWaker(waker, self))
        return rc

    def unengaged_hooks(self) -> list[str]:
        """paho's private names whose hook is not in effect on this client (expected: none).

        Meaningful once connected and looped (after CONNACK).
        """
        missing = []
        if not isinstance(self.socket(), BufferedSocket):
            missing.append(SOCKET_FACTORY)
        if not isinstance(getattr(self, WAKE_SOCKET, None), _LoopWaker):
            missing.append(WAKE_SOCKET)
        return missing
