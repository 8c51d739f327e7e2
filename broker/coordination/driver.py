"""RaftDriver: one RaftNode bound to the broker, the wall clock and SQLite.

One thread owns the node and drives the MQTT connection too (the transport in
inline mode: it waits in ``select`` for the socket, so a message is handled the
moment it arrives, with no hand-off between threads). Inputs go through a
queue, so anything else could feed the node without a lock; callers of
:meth:`RaftDriver.status` read a snapshot. Each loop turn: wait for traffic
until the next tick is due, take every queued input,
tick for the wall-clock time that passed, then drain ``ready()`` and follow the
contract (protocols/raft/ready.py): publish the leader's early appends, persist
(one fsync'd SQLite transaction), ``advance`` the node, and only then publish
that batch's other messages and replies. The followers write the new entries
while the leader does (Raft thesis 10.2.1); the leader counts its own copy
toward the commit quorum only after its fsync returned.

A batch whose only durable change is the commit index (no entries, snapshot,
term or vote) is answered first and written after: the commit index is
volatile in Raft and such a write is not fsync'd anyway (see storage.py), so
the order changes nothing a crash could observe, and it takes the SQLite write
off the path of the client's reply.

The leader stamps each lock command with its wall-clock time
(:func:`protocols.locks.encode_entry`) and appends an ``Expire`` entry every
``expire_interval_ms`` while sessions exist, so leases lapse without traffic.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.coordination.group_state import GroupStateMachine, encode_op
from broker.coordination.lock_events import deadlock_json, publishable_events
from broker.coordination.storage import RaftStorage, StorageError
from broker.coordination.topics import CoordinationTopics
from broker.coordination.transport import PeerTransport
from broker.coordination.wire import ClientReplyMsg, ClientRequest, MessageBatch, decode, encode
from broker.router import ReceivedMessage
from broker.session import BusConfig
from protocols.locks import DeadlockEvent, Expire, LockError, LockEvent, decode_command, encode_entry
from protocols.raft import (
    AppendRequest,
    AppendResponse,
    Message,
    RaftConfig,
    RaftNode,
    RaftStatus,
    Ready,
    Role,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from protocols.raft.ready import BecameLeader, LeaderChanged
from schemas.errors import CodecError
from schemas.topics import TopicTree

__all__ = ["DriverConfig", "RaftDriver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriverConfig:
    """One node of one group. Times: a tick is ``tick_ms`` of wall clock."""

    group: str
    node: str
    peers: tuple[str, ...]
    data_dir: Path
    tick_ms: int = 10
    election_ticks: int = 15
    heartbeat_ticks: int = 3
    expire_interval_ms: int = 200
    snapshot_threshold: int = 5000
    status_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class _LeaderGone:
    leader: str


class _Rng:
    """The injected randomness the pure node asks for."""

    def __init__(self, seed: int | None) -> None:
        self._r = random.Random(seed)

    def below(self, n: int) -> int:
        return self._r.randrange(n)


_Input = Message | ClientRequest | _LeaderGone
_RAFT_MESSAGES = (VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest, TimeoutNow)


class RaftDriver:
    """Runs one Raft node until :meth:`stop`; see the module docstring."""

    def __init__(self, config: DriverConfig, bus: BusConfig, *, seed: int | None = None) -> None:
        if config.node not in config.peers:
            raise ValueError(f"node {config.node!r} is not among the peers {config.peers}")
        self.config = config
        self.topics = CoordinationTopics(_tree(bus.root), config.group)
        device = self.topics.presence_device(config.node)
        self.transport = PeerTransport(bus, device, presence_topic=self.topics.presence(config.node))
        self.storage = RaftStorage(config.data_dir / f"raft-{config.group}-{config.node}.db")
        self.app = GroupStateMachine()
        raft_config = RaftConfig(election_ticks=config.election_ticks, heartbeat_ticks=config.heartbeat_ticks,
                                 snapshot_threshold=config.snapshot_threshold)
        self.node = RaftNode(config.node, config.peers, self.app, _Rng(seed), raft_config,
                             self.storage.load())
        self._inputs: queue.SimpleQueue[_Input] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: RaftStatus = self.node.status()
        self.failed: BaseException | None = None
        self.ready_batches = 0
        self._topics: dict[tuple[str, str], str] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RaftDriver:
        s = self.transport
        s.subscribe(self.topics.inbox(self.config.node), self._on_inbox)
        s.subscribe(self.topics.requests(), self._on_request)
        s.subscribe(self.topics.requests_for(self.config.node), self._on_request)
        for peer in self.config.peers:
            if peer != self.config.node:
                s.subscribe(self.topics.presence(peer), self._presence_handler(peer))
        s.start(threaded=False)  # the loop below drives it
        self._thread = threading.Thread(target=self._run, name=f"raft-{self.config.node}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.transport.stop()
        self.storage.close()

    def status(self) -> RaftStatus:
        """The node's state as of the last loop turn (safe from any thread)."""
        return self._status

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- handlers (called from the loop's transport.poll: decode and queue, nothing else) ----------

    def _on_inbox(self, msg: ReceivedMessage) -> None:
        obj = self._decode(msg)
        if isinstance(obj, MessageBatch):
            for m in obj.messages:
                if m.dst == self.config.node:
                    self._inputs.put(m)
        elif isinstance(obj, _RAFT_MESSAGES) and obj.dst == self.config.node:
            self._inputs.put(obj)

    def _on_request(self, msg: ReceivedMessage) -> None:
        obj = self._decode(msg)
        if isinstance(obj, ClientRequest):
            self._inputs.put(obj)

    def _presence_handler(self, peer: str) -> Callable[[ReceivedMessage], None]:
        def handle(msg: ReceivedMessage) -> None:
            if msg.payload == b"offline":
                self._inputs.put(_LeaderGone(peer))
        return handle

    @staticmethod
    def _decode(msg: ReceivedMessage) -> object | None:
        try:
            return decode(msg.payload)
        except CodecError as exc:
            logger.warning("dropping undecodable message on %s: %s", msg.topic, exc)
            return None

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        tick_s = self.config.tick_ms / 1000
        next_tick = time.monotonic() + tick_s
        last_expire = 0.0
        last_status = 0.0
        seen = (self._status.role, self._status.term, self._status.leader)
        try:
            while not self._stopping.is_set():
                wait = 0.0 if not self._inputs.empty() else max(0.0, next_tick - time.monotonic())
                self.transport.poll(wait)  # handlers queue what arrived
                try:
                    item: _Input | None = self._inputs.get_nowait()
                except queue.Empty:
                    item = None
                batch = 0
                while item is not None and batch < 512:
                    self._handle(item)
                    batch += 1
                    try:
                        item = self._inputs.get_nowait()
                    except queue.Empty:
                        item = None
                now = time.monotonic()
                if now >= next_tick:
                    self.node.tick()
                    next_tick += tick_s
                    if next_tick < now:  # fell far behind (paused?): do not replay a burst of ticks
                        next_tick = now + tick_s
                if (self.node.role is Role.LEADER and self.app.locks.sessions()
                        and now - last_expire >= self.config.expire_interval_ms / 1000):
                    last_expire = now
                    self.node.propose(encode_op("lock", encode_entry(_now_ms(), Expire())))
                self._drain_ready()
                status = self.node.status()
                self._status = status
                key = (status.role, status.term, status.leader)
                if key != seen or now - last_status >= self.config.status_interval_s:
                    seen, last_status = key, now
                    self._publish_status(status)
        except StorageError as exc:
            logger.critical("raft node %s stops: %s", self.config.node, exc)
            self.failed = exc
        except Exception as exc:  # the loop must not die silently
            logger.exception("raft node %s crashed", self.config.node)
            self.failed = exc

    def _handle(self, item: _Input) -> None:
        if isinstance(item, ClientRequest):
            self._propose(item)
        elif isinstance(item, _LeaderGone):
            if self.node.leader == item.leader:
                logger.info("leader %s went offline: electing now", item.leader)
            self.node.leader_gone(item.leader)
        else:
            self.node.step(item)

    def _propose(self, req: ClientRequest) -> None:
        if self.node.role is not Role.LEADER:
            return  # every node hears requests; only the leader acts
        if req.op == "lock":
            try:
                command = encode_op("lock", encode_entry(_now_ms(), decode_command(req.body)))
            except (LockError, CodecError) as exc:
                logger.warning("dropping malformed lock request from %s: %s", req.client_id, exc)
                return
        elif req.op in ("append", "read"):
            command = encode_op(req.op, req.body)
        else:
            logger.warning("dropping request with unknown op %r from %s", req.op, req.client_id)
            return
        self.node.propose(command, req.client_id, req.seq)

    def _drain_ready(self) -> None:
        for _ in range(4):  # advance() may commit, and the next batch carries the replies
            rd = self.node.ready()
            events = self.app.drain_events()
            if rd.empty:
                return
            self.ready_batches += 1
            self._send_messages(rd.early_messages)  # a leader's appends: followers write as we do
            if self.storage.must_sync(rd):
                self.storage.persist(rd)  # durable first (raises StorageError: nothing more is sent)
                self.node.advance(rd)  # only now does the leader count its own entries
                self._send(rd)
            else:
                self._send(rd)  # only the (volatile, unsynced) commit index changed
                self.storage.persist(rd)
                self.node.advance(rd)
            self._publish_events(rd, events)

    def _publish_events(self, rd: Ready, events: list[LockEvent]) -> None:
        if self.node.role is Role.LEADER and events:
            for client, event in publishable_events(events):
                self.transport.publish(self._topic(("reply", client)), encode(event), qos=1)
            for dl in events:
                if isinstance(dl, DeadlockEvent):
                    logger.info("deadlock in %s: %s waiting on %s; victim %s", self.config.group,
                                " -> ".join(dl.cycle), ", ".join(dl.locks), dl.victim)
                    self.transport.publish(self.topics.lock_events(),
                                           deadlock_json(dl, self.config.group, self.config.node), qos=1)
        for ev in rd.events:
            if isinstance(ev, BecameLeader):
                logger.info("node %s became leader of %s in term %d", ev.node, self.config.group, ev.term)
            elif isinstance(ev, LeaderChanged):
                logger.debug("node %s: leader is %s in term %d", self.config.node, ev.leader, ev.term)

    def _send(self, rd: Ready) -> None:
        """Replies first (a client is waiting on each), then the batch's messages."""
        for r in rd.replies:
            reply = ClientReplyMsg(r.request_seq, r.index, r.leader, r.result)
            self.transport.publish(self._topic(("reply", r.client_id)), encode(reply))
        self._send_messages(rd.messages)

    def _send_messages(self, messages: tuple[Message, ...]) -> None:
        """One publish per destination node (a batch when there are several, in order): per-message
        MQTT cost dominated a node's CPU."""
        if not messages:
            return
        by_dst: dict[str, list[Message]] = {}
        for m in messages:
            by_dst.setdefault(m.dst, []).append(m)
        for dst, msgs in by_dst.items():
            payload = encode(msgs[0]) if len(msgs) == 1 else encode(MessageBatch(tuple(msgs)))
            self.transport.publish(self._topic(("inbox", dst)), payload)

    def _topic(self, key: tuple[str, str]) -> str:
        """Inbox and reply topics, built (and validated) once each."""
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) > 4096:
                self._topics.clear()
            kind, name = key
            topic = self.topics.inbox(name) if kind == "inbox" else self.topics.reply(name)
            self._topics[key] = topic
        return topic

    def _publish_status(self, s: RaftStatus) -> None:
        body = {"node": s.node, "role": s.role, "term": s.term, "leader": s.leader, "commit": s.commit,
                "applied": s.applied, "last_index": s.last_index, "snapshot_index": s.snapshot_index,
                "members": list(s.members), "time_ms": _now_ms()}
        self.transport.publish(self.topics.node_status(self.config.node), json.dumps(body), qos=1,
                               retain=True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _tree(root: str) -> TopicTree:
    return TopicTree(root)

