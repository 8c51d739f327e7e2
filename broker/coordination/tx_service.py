"""The two-phase commit manager of one Raft node, bound to the node's MQTT transport.

Every node of the group runs one :class:`GroupTxService`: its
:class:`~protocols.twopc.TxManager` reads the node's replica of the
transaction table (``GroupStateMachine.tx``) and only the leader's acts, so
whichever node leads finishes every transaction the log holds. The
:class:`~broker.coordination.driver.RaftDriver` owns the thread; this class
is called from it only (no locks): :meth:`receive` for a message on the
group's transaction topic, :meth:`applied` for each transaction entry the node
applied, :meth:`leadership` after every Ready, :meth:`tick` each turn.

Entries are stamped with this node's wall clock in ms (``time.time_ns``), the
same clock the lock service's leases use: a transaction's deadline is leader
time, and participants refuse a ``Prepare`` past it by their own clock, so the
group's clocks should agree to well under a transaction timeout (NTP does).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from broker.router import ReceivedMessage
from protocols.coordination.group_state import encode_op
from protocols.twopc import (
    Ack,
    BeginRequest,
    Effect,
    InputError,
    ManagerConfig,
    Propose,
    Send,
    StatusQuery,
    TxDecided,
    TxEnded,
    TxManager,
    TxMessage,
    TxTable,
    Vote,
    encode_entry,
)
from protocols.twopc.messages import TX_MESSAGE_TYPES, TxState
from protocols.twopc.table import TxResult
from protocols.twopc.topics import TxTopics
from schemas.errors import CodecError
from schemas.messages import decode_record, encode_record
from schemas.record_base import Record

__all__ = ["GroupTxService"]

logger = logging.getLogger(__name__)

_OPEN_LIST_LIMIT = 1000  # transactions listed on the retained open topic


def now_ms() -> int:
    return time.time_ns() // 1_000_000


Publish = Callable[..., bool]
ProposeFn = Callable[[bytes], object]


class GroupTxService:
    """See the module docstring."""

    def __init__(self, node_id: str, topics: TxTopics, table: TxTable, publish: Publish,
                 propose: ProposeFn, config: ManagerConfig | None = None,
                 open_interval_s: float = 0.5, tick_interval_s: float = 0.02) -> None:
        self.topics = topics
        self.manager = TxManager(node_id, topics.group, table, config)
        self._publish = publish
        self._propose = propose
        self.counters: Counter[str] = Counter()
        self._open_interval_s = open_interval_s
        self._open_dirty = True
        self._open_sent = 0.0
        self._node = node_id
        self._tick_interval_s = tick_interval_s
        self._last_tick = 0.0

    # ---- inputs (the driver's thread) ---------------------------------------------------------

    def decode(self, msg: ReceivedMessage) -> TxMessage | None:
        """The one reader of the group topic: a valid transaction message, or None (counted, logged)."""
        try:
            record: Record = decode_record(msg.payload)
        except CodecError as exc:
            self._dead_letter("malformed", "", f"{msg.topic}: {exc}")
            return None
        if not isinstance(record, TX_MESSAGE_TYPES):
            self._dead_letter("not_a_tx_message", "", f"{record.TYPE} on {msg.topic}")
            return None
        lane = self.topics.sender_lane(msg.topic)
        speaks_for = _speaks_for(record)
        if lane is None or (speaks_for is not None and speaks_for != lane):
            # The broker lets a device write only its own lane: a message that names another
            # participant or client than its lane's is forged (or misaddressed).
            self._dead_letter("wrong_lane", getattr(record, "tx_id", ""),
                              f"{record.TYPE} for {speaks_for!r} on {msg.topic}")
            return None
        return record

    def receive(self, message: TxMessage) -> None:
        self._run(self.manager.receive(message, now_ms()))

    def applied(self, results: Iterable[TxResult]) -> None:
        for result in results:
            self._open_dirty = True
            self._run(self.manager.applied(result, now_ms()))

    def leadership(self, leading: bool) -> None:
        """Follow the node's role: a new leader takes over every open transaction."""
        if leading and not self.manager.is_leader:
            self._open_dirty = True
            self._run(self.manager.became_leader(now_ms()))
        elif not leading and self.manager.is_leader:
            self.manager.lost_leadership()

    def tick(self, monotonic_now: float) -> None:
        if not self.manager.is_leader or monotonic_now - self._last_tick < self._tick_interval_s:
            return
        self._last_tick = monotonic_now
        self._run(self.manager.tick(now_ms()))
        if self._open_dirty and monotonic_now - self._open_sent >= self._open_interval_s:
            self._open_dirty = False
            self._open_sent = monotonic_now
            self._publish_open()

    def status(self) -> dict[str, object]:
        """For the node's status topic: open transactions on this replica and what the manager counted."""
        table = self.manager.table
        open_ = list(table.open_transactions())
        return {"open": len(open_), "undecided": sum(1 for t in open_ if t.outcome is None),
                "counters": dict(sorted(self.counters.items()))}

    # ---- effects -----------------------------------------------------------------------------

    def _run(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Send):
                to_group = e.to == self.topics.group
                topic = self.topics.group_inbox(self._node) if to_group else self.topics.to(e.to)
                self._publish(topic, encode_record(e.message), qos=1)
                self.counters[f"sent_{e.message.TYPE}"] += 1
            elif isinstance(e, Propose):
                self._propose(encode_op("tx", encode_entry(now_ms(), e.command)))
            elif isinstance(e, TxDecided):
                self.counters[f"decided_{e.outcome.value}"] += 1
                logger.info("transaction %s: %s%s", e.tx_id, e.outcome.value,
                            f" ({e.reason})" if e.reason else "")
                self._event({"event": "decided", "tx": e.tx_id, "outcome": e.outcome.value,
                             "reason": e.reason})
            elif isinstance(e, TxEnded):
                self.counters["ended"] += 1
                self._event({"event": "ended", "tx": e.tx_id, "outcome": e.outcome.value})
            elif isinstance(e, InputError):
                self._dead_letter(e.code, e.tx_id, e.detail)

    def _event(self, body: dict[str, object]) -> None:
        body.update(group=self.topics.group, node=self._node, time_ms=now_ms())
        self._publish(self.topics.events(), json.dumps(body), qos=1)

    def _dead_letter(self, code: str, tx_id: str, detail: str) -> None:
        self.counters[f"refused_{code}"] += 1
        logger.warning("two-phase commit input refused (%s) tx=%s: %s", code, tx_id or "-", detail)
        body = {"code": code, "tx": tx_id, "detail": detail[:512], "group": self.topics.group,
                "node": self._node, "time_ms": now_ms()}
        self._publish(self.topics.dead_letters(), json.dumps(body), qos=1)

    def _publish_open(self) -> None:
        """The retained list of open transactions (``edge-bus tx list``): the leader's view."""
        table = self.manager.table
        rows = []
        for tx in table.open_transactions():
            rows.append({"tx": tx.tx_id, "client": tx.client, "participants": list(tx.participants),
                         "state": tx.state.value, "reason": tx.reason, "began_ms": tx.began_ms,
                         "deadline_ms": tx.deadline_ms, "decided_ms": tx.decided_ms})
            if len(rows) >= _OPEN_LIST_LIMIT:
                break
        body = {"group": self.topics.group, "leader": self._node, "time_ms": now_ms(),
                "open": rows, "truncated": len(rows) >= _OPEN_LIST_LIMIT,
                "pending": sum(1 for r in rows if r["state"] == TxState.PENDING.value)}
        self._publish(self.topics.open_transactions(), json.dumps(body), qos=1, retain=True)


def _speaks_for(record: TxMessage) -> str | None:
    """The participant or client id a group-bound message speaks for (None: names nobody)."""
    if isinstance(record, Vote | Ack):
        return record.participant
    if isinstance(record, BeginRequest):
        return record.client
    if isinstance(record, StatusQuery):
        return record.asker
    return None
