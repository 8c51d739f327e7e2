"""RaftClient: send a command to a group's leader and wait for the applied result.

A request goes to the leader's own request topic once a reply has named the
leader, else (and on every retry, in case leadership moved) to
``{root}/_sys/lock/{group}/req/{lane}``, which every node hears and only the
leader acts on; answers come back on this client's reply topic
``.../reply/{lane}/{client_id}``. The lane is the broker user the session
logged in as (``anonymous`` without one): the broker's ACL lets a user write
only its own lane and read only its own replies, and the group takes the
requester's identity from the lane (see :mod:`protocols.coordination.topics`). A
request is re-sent with the SAME ``(client_id, seq)`` until answered, and the
Raft session table applies it once however many copies arrive, so a retry
after a leader crash cannot double an append or an acquire. One request is in
flight at a time (the session table's rule); ``seq`` starts from the clock so a
restarted client with the same id is never mistaken for a retry.

The operator's calls (:meth:`RaftClient.add_member`, :meth:`~RaftClient.remove_member`,
:meth:`~RaftClient.transfer_leadership`) are :class:`AdminRequest` s on the
group's ``admin`` topics with the same retry discipline; they are not log
commands, so they need no session table: each request names the outcome
wanted and the leader answers "ok" to a retry that finds it done. A "busy"
answer (another change still committing, a fresh leader) is retried until
the timeout, then raised as :class:`AdminRefused`; a "refused" one at once; a
change still "pending" at the timeout (no majority to commit it) is a
:class:`CoordinationTimeout` that says what it waits for.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import msgpack

from broker.coordination.transport import PeerTransport
from broker.router import ReceivedMessage
from broker.session import BusSession
from protocols.coordination.topics import CoordinationTopics
from protocols.coordination.wire import (
    AdminReplyMsg,
    AdminRequest,
    AdminStatus,
    ClientReplyMsg,
    ClientRequest,
    LockEventMsg,
    decode,
    encode,
)
from schemas.errors import AdminRefused, CodecError, CoordinationError, CoordinationTimeout, TopicError
from schemas.topics import validate_name

__all__ = ["ANONYMOUS_LANE", "RaftClient", "lane_of"]

#: The lane of a session that logged in with no user name.
ANONYMOUS_LANE = "anonymous"

logger = logging.getLogger(__name__)


def lane_of(session: BusSession | PeerTransport) -> str:
    """The broker user ``session`` logs in as: the lane its lock requests travel in."""
    config = session.bus if isinstance(session, PeerTransport) else session.config
    return config.username or ANONYMOUS_LANE


class RaftClient:
    """Request/reply client of one Raft group (thread-safe; requests are serialised)."""

    def __init__(self, session: BusSession | PeerTransport, group: str, client_id: str | None = None, *,
                 retry_interval: float = 0.25, timeout: float = 10.0) -> None:
        self.session = session
        self.topics = CoordinationTopics(session.topics, group)
        self.client_id = validate_name(client_id or f"c{uuid.uuid4().hex[:12]}", "client id")
        self.lane = lane_of(session)
        self.retry_interval = retry_interval
        self.timeout = timeout
        self._seq = time.time_ns() // 1000
        self._one_at_a_time = threading.Lock()
        self._cond = threading.Condition()
        self._waiting_seq = 0
        self._answer: ClientReplyMsg | None = None
        self._event_listeners: list[Callable[[LockEventMsg], None]] = []
        self._admin_seq = 0
        self._admin_answer: AdminReplyMsg | None = None
        self.leader: str | None = None
        self.retries = 0
        session.subscribe(self.topics.reply(self.lane, self.client_id), self._on_reply)
        session.subscribe(self.topics.admin_reply(self.client_id), self._on_admin_reply)

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
                    topic = self.topics.requests_for(self.lane, self.leader)
                else:
                    topic = self.topics.requests(self.lane)
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

    # -- membership and leadership (operators) --------------------------------------------------

    def add_member(self, node: str, timeout: float | None = None) -> tuple[str, ...]:
        """Make ``node`` a voting member; the members once that is committed.

        Start the node with ``node_main --join`` FIRST: the group's quorum grows
        at once, so a member that is not running weakens it. Adding a member
        already present is a no-op ("ok").
        """
        return self.admin("add", _node_id(node), timeout).members

    def remove_member(self, node: str, timeout: float | None = None) -> tuple[str, ...]:
        """Remove ``node`` (dead or alive; stop a live one afterwards); the members once committed.

        The leader cannot remove itself (:class:`AdminRefused`): transfer leadership first.
        Removing a node that is not a member is a no-op ("ok").
        """
        return self.admin("remove", _node_id(node), timeout).members

    def transfer_leadership(self, to: str | None = None, timeout: float | None = None) -> str:
        """Hand leadership to ``to`` (default: the most caught-up follower); the new leader.

        Proposals pause for the hand-over (clients retry them); an election
        timeout at most. ``to=None`` moves leadership off the current leader, as
        this client learns it first, so a retry after the move does not move it again.
        """
        if to is not None:
            reply = self.admin("transfer", _node_id(to), timeout)
        else:
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            current = self.members(timeout)[0]
            reply = self.admin("step_down", current or "", max(0.0, deadline - time.monotonic()))
        if not reply.leader:
            raise CoordinationError("the transfer ended with no leader known")
        return reply.leader

    def members(self, timeout: float | None = None) -> tuple[str | None, tuple[str, ...]]:
        """``(leader, members)`` as the leader sees them."""
        reply = self.admin("members", "", timeout)
        return reply.leader or None, reply.members

    def admin(self, action: str, node: str = "", timeout: float | None = None) -> AdminReplyMsg:
        """Send an :class:`AdminRequest` until the leader says "ok"; see the module docstring."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._one_at_a_time:
            self._seq += 1
            req = AdminRequest(self.client_id, self._seq, action, node)
            payload = encode(req)
            with self._cond:
                self._admin_seq, self._admin_answer = req.seq, None
            target, last, busy, hops = self.leader, "no answer", False, 0
            try:
                while True:
                    topic = self.topics.admin_requests_for(target) if target else self.topics.admin_requests()
                    if not self.session.publish(topic, payload):
                        raise CoordinationError("the session's outbox refused the request")
                    resend_at = min(deadline, time.monotonic() + self.retry_interval)
                    redirected, asked = False, target
                    target = None  # unless told otherwise: ask everyone (leadership may have moved)
                    while (answer := self._await_admin(resend_at)) is not None:
                        if answer.status == AdminStatus.OK:
                            self.leader = answer.leader or None
                            return answer
                        if answer.status == AdminStatus.REFUSED:
                            raise AdminRefused(answer.reason)
                        last, busy = f"{answer.status}: {answer.reason}", answer.status == AdminStatus.BUSY
                        if answer.status == AdminStatus.NOT_LEADER:
                            self.leader = answer.leader or None
                            if answer.leader and answer.leader != asked and hops < 3:
                                target, redirected, hops = answer.leader, True, hops + 1
                                break  # go straight to the leader it named (not forever: hints go stale)
                        else:
                            target = self.leader = answer.leader or None
                    if time.monotonic() >= deadline:
                        if busy:  # the leader kept saying "not now": that is its answer
                            raise AdminRefused(f"{last.removeprefix('busy: ')} (still so at the timeout)")
                        raise CoordinationTimeout(f"group {self.topics.group!r}: {action} {node} not done "
                                                  f"within the timeout (last answer: {last})")
                    self.retries += 1
                    if not redirected:
                        time.sleep(max(0.0, resend_at - time.monotonic()))
            finally:
                with self._cond:
                    self._admin_seq = 0

    def _await_admin(self, until: float) -> AdminReplyMsg | None:
        with self._cond:
            while self._admin_answer is None and time.monotonic() < until:
                self._cond.wait(until - time.monotonic())
            answer, self._admin_answer = self._admin_answer, None
            return answer

    def _on_admin_reply(self, msg: ReceivedMessage) -> None:
        try:
            obj = decode(msg.payload)
        except CodecError as exc:
            logger.warning("dropping undecodable admin reply: %s", exc)
            return
        if isinstance(obj, AdminReplyMsg):
            with self._cond:
                if obj.seq == self._admin_seq and self._admin_answer is None:
                    self._admin_answer = obj
                    self._cond.notify_all()

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


def _node_id(node: str) -> str:
    """A node id is one topic level: refuse anything else here, before a round trip."""
    try:
        return validate_name(node, "node id")
    except TopicError as exc:
        raise CoordinationError(str(exc)) from exc


def _ok(result: bytes) -> object:
    try:
        _version, status, value = msgpack.unpackb(result)
    except (ValueError, TypeError) as exc:
        raise CoordinationError(f"malformed result: {exc}") from exc
    if status != "ok":
        raise CoordinationError(f"the group refused the command: {value}")
    return value
