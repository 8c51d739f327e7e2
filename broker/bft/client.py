"""BftClient: submit an operation to a PBFT group over MQTT and wait for f+1 matching replies."""

from __future__ import annotations

import threading
import time

from broker.bft.group import BftGroup
from broker.bft.topics import BftTopics
from broker.coordination.transport import PeerTransport
from broker.router import ReceivedMessage
from broker.session import BusConfig
from protocols.pbft import Accepted, Client, Ed25519Signer
from schemas.errors import CoordinationTimeout


class BftClient:
    """One outstanding request (PBFT's client model): concurrent callers of :meth:`submit` take turns."""

    def __init__(self, group: BftGroup, signer: Ed25519Signer, bus: BusConfig) -> None:
        if signer.identity in group.pbft.replicas:
            raise ValueError("a replica identity cannot be a client")
        self.group = group
        self.topics = BftTopics(bus.root, group.name)
        # timestamps from the wall clock (microseconds), so a restarted client is never taken for a replay
        self._core = Client(group.pbft, signer, group.verifier, first_timestamp=time.time_ns() // 1000)
        self._lock = threading.Lock()
        self._turn = threading.Lock()  # held for a whole submit: waiting on _done releases _lock
        self._done = threading.Condition(self._lock)
        self._result: Accepted | None = None
        self.transport = PeerTransport(bus, f"bft-{group.name}-{signer.identity}")
        self.transport.subscribe(self.topics.inbox(signer.identity), self._on_reply)

    def start(self, timeout: float = 10.0) -> BftClient:
        self.transport.start()
        if not self.transport.wait_connected(timeout):
            raise CoordinationTimeout(f"no broker connection within {timeout}s")
        return self

    def stop(self) -> None:
        self.transport.stop()

    def _on_reply(self, msg: ReceivedMessage) -> None:
        with self._lock:
            acc = self._core.receive(msg.payload)
            if acc is not None:
                self._result = acc
                self._done.notify_all()

    def _send(self, frame: bytes) -> None:
        for r in self.group.pbft.replicas:
            self.transport.publish(self.topics.inbox(r), frame)

    def submit(self, operation: bytes, timeout: float = 10.0) -> bytes:
        """The group's result for ``operation`` (f+1 replicas agree on it); CoordinationTimeout if none."""
        resend = self.group.pbft.client_resend_ticks * self.group.tick_ms / 1000
        deadline = time.monotonic() + timeout
        with self._turn, self._lock:
            self._result = None
            frame = self._core.submit(operation)
            self._send(frame)
            while self._result is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._core.abandon()
                    raise CoordinationTimeout(f"no f+1 matching replies within {timeout}s")
                if not self._done.wait(min(left, resend)) and self._result is None:
                    self._send(frame)  # to every replica again: the primary may be the one that is gone
            return self._result.result
