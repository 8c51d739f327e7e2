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

Membership is operated through :class:`AdminRequest` (topics in topics.py): the
leader turns ``add``/``remove`` into the core's single-server CONFIG entry and
answers once it is COMMITTED (so an "ok" survives any later failover), and
``transfer``/``step_down`` into ``transfer_leadership`` and answers once
this node sees the target lead. Requests name the outcome, not a delta, so a
client's retry that finds it done is simply "ok". A node started with
``join=True`` has no bootstrap members: it never campaigns and learns the
configuration, including the entry that adds it, from the leader.
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

from broker.coordination.storage import RaftStorage
from broker.coordination.transport import PeerTransport
from broker.coordination.tx_service import GroupTxService
from broker.router import ReceivedMessage
from broker.session import BusConfig
from protocols.coordination.group_state import GroupStateMachine, encode_op
from protocols.coordination.lock_events import deadlock_json, publishable_events
from protocols.coordination.topics import CoordinationTopics
from protocols.coordination.wire import (
    AdminReplyMsg,
    AdminRequest,
    AdminStatus,
    ClientReplyMsg,
    ClientRequest,
    MessageBatch,
    decode,
    encode,
)
from protocols.locks import DeadlockEvent, Expire, LockEvent, decode_command, encode_entry
from protocols.raft import (
    Accepted,
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    Message,
    NotLeader,
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
from protocols.raft.ready import BecameLeader, LeaderChanged, MembersChanged
from protocols.twopc import TxMessage
from protocols.twopc.messages import TX_MESSAGE_TYPES
from protocols.twopc.topics import TxTopics
from schemas.errors import CodecError, LockError, StorageError, TopicError
from schemas.topics import TopicTree, validate_name

__all__ = ["DriverConfig", "RaftDriver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriverConfig:
    """One node of one group. Times: a tick is ``tick_ms`` of wall clock.

    ``peers`` is the bootstrap configuration of a new group (the same on every
    node; ignored once the log holds a membership change). ``join=True`` starts
    a node for an existing group with no peers at all: an operator then adds it.
    """

    group: str
    node: str
    peers: tuple[str, ...]
    data_dir: Path
    join: bool = False
    tick_ms: int = 10
    election_ticks: int = 15
    heartbeat_ticks: int = 3
    expire_interval_ms: int = 200
    snapshot_threshold: int = 5000
    status_interval_s: float = 1.0
    admin_wait_s: float = 5.0  # how long an admin request waits for its outcome before "busy, retry"


@dataclass(frozen=True, slots=True)
class _LeaderGone:
    leader: str


@dataclass(frozen=True, slots=True)
class _Admin:
    req: AdminRequest
    directed: bool  # sent to this node by name: a follower answers "not leader"


@dataclass(slots=True)
class _Pending:
    """An admin request whose answer waits for a commit (``index``) or a new leader (``target``)."""

    req: AdminRequest
    deadline: float
    index: int = 0
    target: str = ""


class _Rng:
    """The injected randomness the pure node asks for."""

    def __init__(self, seed: int | None) -> None:
        self._r = random.Random(seed)

    def below(self, n: int) -> int:
        return self._r.randrange(n)


_Input = Message | ClientRequest | _LeaderGone | _Admin | TxMessage
_RAFT_MESSAGES = (VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest, TimeoutNow)


class RaftDriver:
    """Runs one Raft node until :meth:`stop`; see the module docstring."""

    def __init__(self, config: DriverConfig, bus: BusConfig, *, seed: int | None = None) -> None:
        if config.join and config.peers:
            raise ValueError("a joining node takes no peers: it learns the members from the leader")
        if not config.join and config.node not in config.peers:
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
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._watched: set[str] = set()  # peers whose presence (will) this node follows
        self._was_member = config.node in self.node.members
        self.tx = GroupTxService(config.node, TxTopics(_tree(bus.root), config.group), self.app.tx,
                                 self.transport.publish, self._propose_tx)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RaftDriver:
        s = self.transport
        s.subscribe(self.topics.inbox(self.config.node), self._on_inbox)
        s.subscribe(self.topics.all_requests(), self._on_request)
        s.subscribe(self.topics.all_requests_for(self.config.node), self._on_request)
        s.subscribe(self.topics.admin_requests(), self._admin_handler(directed=False))
        s.subscribe(self.topics.admin_requests_for(self.config.node), self._admin_handler(directed=True))
        s.subscribe(self.tx.topics.all_group_inboxes(), self._on_tx)
        self._watch_presence(self.config.peers + self.node.members)
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
        lane = self.topics.request_lane(msg.topic)
        obj = self._decode(msg) if lane is not None else None
        if lane is not None and isinstance(obj, ClientRequest):
            try:
                validate_name(lane, "lane")
                validate_name(obj.client_id, "client id")
            except TopicError as exc:
                logger.warning("dropping request on %s: %s", msg.topic, exc)
                return
            # Identity comes from the topic (the broker lets a user write only its own lane):
            # the Raft session key and the lock requester are the lane, whatever the payload says.
            self._inputs.put(ClientRequest(f"{lane}/{obj.client_id}", obj.seq, obj.op, obj.body))

    def _on_tx(self, msg: ReceivedMessage) -> None:
        if self.node.role is not Role.LEADER:
            return  # every node hears the group topic; only the leader acts (a stale read is harmless)
        obj = self.tx.decode(msg)
        if obj is not None:
            self._inputs.put(obj)

    def _admin_handler(self, directed: bool) -> Callable[[ReceivedMessage], None]:
        def handle(msg: ReceivedMessage) -> None:
            obj = self._decode(msg)
            if isinstance(obj, AdminRequest):
                self._inputs.put(_Admin(obj, directed))
        return handle

    def _watch_presence(self, peers: tuple[str, ...]) -> None:
        """Follow the wills of ``peers`` (new members too: any of them may come to lead)."""
        for peer in peers:
            if peer != self.config.node and peer not in self._watched:
                self._watched.add(peer)
                self.transport.subscribe(self.topics.presence(peer), self._presence_handler(peer))

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
                self.tx.leadership(self.node.role is Role.LEADER)
                self.tx.tick(now)
                if self._pending:
                    self._settle_admin(now)
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
        elif isinstance(item, _Admin):
            self._admin(item)
        elif isinstance(item, TX_MESSAGE_TYPES):
            self.tx.receive(item)
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
            lane = req.client_id.partition("/")[0]
            try:
                command = encode_op("lock", encode_entry(_now_ms(), decode_command(req.body), requester=lane))
            except (LockError, CodecError) as exc:
                logger.warning("dropping malformed lock request from %s: %s", req.client_id, exc)
                return
        elif req.op in ("append", "read"):
            command = encode_op(req.op, req.body)
        else:
            logger.warning("dropping request with unknown op %r from %s", req.op, req.client_id)
            return
        self.node.propose(command, req.client_id, req.seq)

    def _propose_tx(self, command: bytes) -> None:
        """A transaction manager's proposal; refused ones are proposed again by the manager."""
        if self.node.role is Role.LEADER:
            self.node.propose(command)

    # -- membership and leadership (operator requests) ----------------------------------------------

    def _admin(self, item: _Admin) -> None:
        req, node = item.req, self.node
        if node.role is not Role.LEADER:
            if item.directed:  # a broadcast is the leader's alone to answer
                self._admin_reply(req, AdminStatus.NOT_LEADER, f"{self.config.node} is not the leader")
            return
        waiting = self._pending.get((req.client_id, req.seq))
        if waiting is not None:  # a retry: the outcome is slow in coming, so say what it waits for
            self._admin_reply(req, AdminStatus.PENDING, self._waits_for(waiting))
            return
        if req.action != "members" and req.node:
            try:
                validate_name(req.node, "node id")
            except TopicError as exc:
                self._admin_reply(req, AdminStatus.REFUSED, str(exc))
                return
        if req.action == "members":
            self._admin_reply(req, AdminStatus.OK)
        elif req.action in ("add", "remove"):
            self._change_members(req)
        else:
            self._transfer(req)

    def _change_members(self, req: AdminRequest) -> None:
        node, add = self.node, req.action == "add"
        if not req.node:
            self._admin_reply(req, AdminStatus.REFUSED, f"{req.action} needs a node id")
            return
        if (req.node in node.members) == add:  # already as asked: ok once that config is committed
            cfg = self._uncommitted_config()
            if cfg is None:
                already = f"{req.node} is {'already' if add else 'not'} a member"
                self._admin_reply(req, AdminStatus.OK, already)
            else:
                self._wait(req, index=cfg.index)
            return
        if not add and req.node == node.id:
            self._admin_reply(req, AdminStatus.REFUSED, f"{node.id} is the leader and a leader cannot remove "
                              f"itself: transfer leadership first (edge-bus raft transfer), then remove it")
            return
        res = node.propose_membership(add=req.node) if add else node.propose_membership(remove=req.node)
        if isinstance(res, Accepted):
            logger.info("%s: %s %s proposed at index %d", self.config.group,
                        "adding" if add else "removing", req.node, res.index)
            self._wait(req, index=res.index)
        elif isinstance(res, NotLeader):
            self._admin_reply(req, AdminStatus.NOT_LEADER, "leadership changed")
        else:  # the remaining refusals pass: a change or transfer in flight, a leader fresh in its term
            self._admin_reply(req, AdminStatus.BUSY, res.reason)

    def _transfer(self, req: AdminRequest) -> None:
        node = self.node
        if req.action == "step_down":
            if req.node and req.node != node.id:
                self._admin_reply(req, AdminStatus.OK, f"{req.node} no longer leads")
                return
            target = node.transfer_candidate()
            if target is None:
                self._admin_reply(req, AdminStatus.REFUSED, "no other member to hand leadership to")
                return
        else:
            target = req.node
            if target == node.id:
                self._admin_reply(req, AdminStatus.OK, f"{target} leads")
                return
            if target not in node.members:
                self._admin_reply(req, AdminStatus.REFUSED,
                                  f"{target} is not a member: add it first (edge-bus raft add-member)")
                return
        if node.transferee is not None and node.transferee != target:
            self._admin_reply(req, AdminStatus.BUSY, f"a transfer to {node.transferee} is in progress")
            return
        if node.transferee is None:
            if not node.transfer_leadership(target):
                self._admin_reply(req, AdminStatus.BUSY, f"cannot transfer to {target} now")
                return
            logger.info("%s: handing leadership from %s to %s", self.config.group, node.id, target)
        self._wait(req, target=target)

    def _wait(self, req: AdminRequest, index: int = 0, target: str = "") -> None:
        deadline = time.monotonic() + self.config.admin_wait_s
        self._pending[(req.client_id, req.seq)] = _Pending(req, deadline, index, target)

    def _waits_for(self, p: _Pending) -> str:
        """What an operator whose request times out needs to know."""
        if p.target:
            return f"handing leadership to {p.target}"
        return (f"proposed at index {p.index}; waiting for a majority of {', '.join(self.node.members)} "
                f"to store it (are they running?)")

    def _uncommitted_config(self) -> Entry | None:
        for e in reversed(self.node.log.entries(self.node.commit + 1)):
            if e.kind is EntryKind.CONFIG:
                return e
        return None

    def _settle_admin(self, now: float) -> None:
        """Answer the admin requests whose outcome is now known (or that waited long enough)."""
        for key, p in list(self._pending.items()):
            outcome = self._outcome(p)
            if outcome is None:
                if now >= p.deadline:  # bound the table; the client's next retry waits afresh
                    del self._pending[key]
                continue
            del self._pending[key]
            status, reason = outcome
            self._admin_reply(p.req, status, reason)
            if status == AdminStatus.OK and p.req.action == "remove":
                # its retained status would list a ghost in `edge-bus raft status` forever
                self.transport.publish(self.topics.node_status(p.req.node), b"", qos=1, retain=True)

    def _outcome(self, p: _Pending) -> tuple[str, str] | None:
        node = self.node
        if not p.target:  # a membership change: done when its CONFIG entry is committed
            if node.role is not Role.LEADER:
                return AdminStatus.NOT_LEADER, "leadership changed before the change committed"
            return (AdminStatus.OK, "committed") if node.commit >= p.index else None
        if node.role is Role.LEADER:
            if node.transferee is None:  # the core gave up after an election timeout
                return AdminStatus.BUSY, f"{p.target} did not take over in time (running? caught up?)"
            return None
        if node.leader is None:
            return None  # the election is still on
        if node.leader == p.target or (p.req.action == "step_down" and node.leader != node.id):
            return AdminStatus.OK, f"{node.leader} leads"
        return AdminStatus.BUSY, f"{node.leader} won the election instead of {p.target}"

    def _admin_reply(self, req: AdminRequest, status: str, reason: str = "") -> None:
        node = self.node
        reply = AdminReplyMsg(req.seq, status, node.leader or "", reason, node.members)
        self.transport.publish(self.topics.admin_reply(req.client_id), encode(reply))

    def _drain_ready(self) -> None:
        for _ in range(4):  # advance() may commit, and the next batch carries the replies
            rd = self.node.ready()
            events = self.app.drain_events()
            if rd.empty:
                return
            self.ready_batches += 1
            self._send_messages(rd.early_messages)  # a leader's appends: followers write as we do
            if rd.must_sync:
                self.storage.persist(rd)  # durable first (raises StorageError: nothing more is sent)
                self.node.advance(rd)  # only now does the leader count its own entries
                self._send(rd)
            else:
                self._send(rd)  # only the (volatile, unsynced) commit index changed
                self.storage.persist(rd)
                self.node.advance(rd)
            self._publish_events(rd, events)
            self.tx.leadership(self.node.role is Role.LEADER)
            self.tx.applied(self.app.drain_tx_results())

    def _publish_events(self, rd: Ready, events: list[LockEvent]) -> None:
        if self.node.role is Role.LEADER and events:
            for session, event in publishable_events(events):
                owner = self.app.locks.owner(session)
                topic = self._topic(("reply", f"{owner}/{session}")) if owner else None
                if topic is not None:  # a session that is gone, or from before lanes, has nobody to tell
                    self.transport.publish(topic, encode(event), qos=1)
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
            elif isinstance(ev, MembersChanged):
                self._members_changed(ev.members)

    def _members_changed(self, members: tuple[str, ...]) -> None:
        logger.info("node %s: members of %s are now %s", self.config.node, self.config.group,
                    ", ".join(members))
        self._watch_presence(members)
        if self.config.node in members:
            self._was_member = True
        elif self._was_member and members:
            # No campaigns from here on (the core checks membership); the process is no use now.
            logger.warning("node %s was removed from %s: stop this process", self.config.node,
                           self.config.group)
            self._was_member = False

    def _send(self, rd: Ready) -> None:
        """Replies first (a client is waiting on each), then the batch's messages."""
        for r in rd.replies:
            reply = ClientReplyMsg(r.request_seq, r.index, r.leader, r.result)
            topic = self._topic(("reply", r.client_id))
            if topic is not None:
                self.transport.publish(topic, encode(reply))
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
            topic = self._topic(("inbox", dst))
            if topic is not None:
                self.transport.publish(topic, payload)

    def _topic(self, key: tuple[str, str]) -> str | None:
        """Inbox and reply topics, built (and validated) once each; None for a reply nobody can hear."""
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) > 4096:
                self._topics.clear()
            kind, name = key
            if kind == "inbox":
                return self._topics.setdefault(key, self.topics.inbox(name))
            lane, _, client = name.partition("/")  # a Raft session key or a lock session: "{lane}/{client}"
            try:
                topic = self.topics.reply(lane, client)
            except TopicError as exc:  # a log entry from before lanes, a session id that is no topic level
                logger.debug("no reply topic for %r: %s", name, exc)
                return None
            self._topics[key] = topic
        return topic

    def _publish_status(self, s: RaftStatus) -> None:
        body = {"node": s.node, "role": s.role, "term": s.term, "leader": s.leader, "commit": s.commit,
                "applied": s.applied, "last_index": s.last_index, "snapshot_index": s.snapshot_index,
                "members": list(s.members), "time_ms": _now_ms(), "tx": self.tx.status()}
        self.transport.publish(self.topics.node_status(self.config.node), json.dumps(body), qos=1,
                               retain=True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _tree(root: str) -> TopicTree:
    return TopicTree(root)

