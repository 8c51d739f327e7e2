"""RaftClient: send a command to a group's leader and wait for the applied result.

A request goes to the leader's own request topic once a reply has named the
leader, else (and on every retry, in case leadership moved) to
``{root}/_sys/lock/{group}/req``, which every node hears and only the leader
acts on; answers come back on this client's reply topic. A
request is re-sent with the SAME ``(client_id, seq)`` until answered, and the
Raft session table applies it once however many copies arrive, so a retry
after a leader crash cannot double an append or an acquire. One request is in
flight at a time (the session table's rule); ``seq`` starts from the clock so a
restarted client with the same id is never mistaken for a retry.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import msgpack

from broker.coordination.errors import CoordinationError, CoordinationTimeout
from broker.coordination.topics import CoordinationTopics
from broker.coordination.transport import PeerTransport
from broker.coordination.wire import ClientReplyMsg, ClientRequest, LockEventMsg, decode, encode
from broker.router import ReceivedMessage
from broker.session import BusSession
from schemas.errors import CodecError

__all__ = ["RaftClient"]

logger = logging.getLogger(__name__)


class RaftClient:
    """Request/reply client of one Raft group (thread-safe; requests are serialised)."""

    def __init__(self, session: BusSession | PeerTransport, group: str, client_id: str | None = None, *,
                 retry_interval: float = 0.25, timeout: float = 10.0) -> None:
        self.session = session
        self.topics = CoordinationTopics(session.topics, group)
        self.client_id = client_id or f"c{uuid.uuid4().hex[:12]}"
        self.retry_interval = retry_interval
        self.timeout = timeout
        self._seq = time.time_ns() // 1000
        self._one_at_a_time = threading.Lock()
        self._cond = threading.Condition()
        self._waiting_seq = 0
        self._answer: ClientReplyMsg | None = None
        self._event_listeners: list[Callable[[LockEventMsg], None]] = []
        self.leader: str | None = None
        self.retries = 0
        session.subscribe(self.topics.reply(self.client_id), self._on_reply)

    def on_lock_event(self, listener: Callable[[LockEventMsg], None]) -> None:
        """Call ``listener`` (on the network thread) for grants and cancellations nobody asked for."""
        self._event_listeners.append(listener)

    def request(self, op: str, body: bytes = b"", timeout: float | None = None) -> ClientReplyMsg:
        """Send until the leader answers; :class:`CoordinationTimeout` after ``timeout`` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._one_at_a_time:
            self._seq += 1
            req = ClientRequest(self.client_id, self._seq, op, body)
            payload = encode(req)
            with self._cond:
                self._waiting_seq, self._answer = req.seq, None
            first = True
            while True:
                if first and self.leader:
                    topic = self.topics.requests_for(self.leader)
                else:
                    topic = self.topics.requests()
                if not first:
                    self.retries += 1
                first = False
                if not self.session.publish(topic, payload):
                    raise CoordinationError("the session's outbox refused the request")
                resend_at = min(deadline, time.monotonic() + self.retry_interval)
                with self._cond:
                    while self._answer is None and time.monotonic() < resend_at:
                        self._cond.wait(resend_at - time.monotonic())
                    if self._answer is not None:
                        answer, self._waiting_seq = self._answer, 0
                        return answer
                if time.monotonic() >= deadline:
                    with self._cond:
                        self._waiting_seq = 0
                    raise CoordinationTimeout(f"no answer from group {self.topics.group!r} to {op} "
                                              f"(seq {req.seq}) within the timeout")

    def append(self, data: bytes, timeout: float | None = None) -> int:
        """Append to the group's register; the 1-based slot it landed in."""
        value = _ok(self.request("append", data, timeout).result)
        if not isinstance(value, int):
            raise CoordinationError(f"append answered {value!r}, not a slot")
        return value

    def read(self, timeout: float | None = None) -> list[bytes]:
        """The whole register, read through the log (linearizable)."""
        value = _ok(self.request("read", b"", timeout).result)
        if not isinstance(value, list):
            raise CoordinationError("read answered something that is not a list")
        return [bytes(x) for x in value]

    def _on_reply(self, msg: ReceivedMessage) -> None:
        try:
            obj = decode(msg.payload)
        except CodecError as exc:
            logger.warning("dropping undecodable reply: %s", exc)
            return
        if isinstance(obj, ClientReplyMsg):
            self.leader = obj.leader or None
            with self._cond:
                if obj.seq == self._waiting_seq and self._answer is None:
                    self._answer = obj
                    self._cond.notify_all()
        elif isinstance(obj, LockEventMsg):
            for listener in list(self._event_listeners):
                listener(obj)


def _ok(result: bytes) -> object:
    try:
        _version, status, value = msgpack.unpackb(result)
    except (ValueError, TypeError) as exc:
        raise CoordinationError(f"malformed result: {exc}") from exc
    if status != "ok":
        raise CoordinationError(f"the group refused the command: {value}")
    return value
