"""What the coordination layer says about itself, as the coordinator overhears it on the broker.

Raft nodes publish a retained status (``{root}/_sys/raft/{group}/{node}/status``:
role, term, leader, commit, members, the transaction manager's figures); the
leader of each group keeps a retained list of open two-phase-commit
transactions (``{root}/_sys/tx/{group}/open``) and announces every decision
and end (``{root}/_sys/tx/{group}/events``); deadlocks are announced on
``{root}/_sys/lock/{group}/events``. :class:`CoordinationView` subscribes to all
four with ``+`` for the group and keeps the newest of each (events: the last
:data:`RECENT` per group), for the HTTP API and the dashboard. It only reads:
nothing here takes part in any protocol.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any

from broker.router import ReceivedMessage
from broker.session import BusSession

__all__ = ["RECENT", "CoordinationView"]

logger = logging.getLogger(__name__)

RECENT = 100
_MAX_GROUPS = 256
_MAX_NODES = 64


def _json_object(msg: ReceivedMessage) -> dict[str, Any] | None:
    try:
        body = json.loads(msg.payload)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class CoordinationView:
    """The newest Raft statuses, open-transaction lists and protocol events, per group."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._lock = threading.Lock()
        self.raft: dict[str, dict[str, dict[str, Any]]] = {}
        self.open_transactions: dict[str, dict[str, Any]] = {}
        self.tx_events: dict[str, deque[dict[str, Any]]] = {}
        self.lock_events: dict[str, deque[dict[str, Any]]] = {}

    def subscriptions(self) -> dict[str, Any]:
        sys = f"{self.root}/_sys"
        return {f"{sys}/raft/+/+/status": self._on_raft_status, f"{sys}/tx/+/open": self._on_open,
                f"{sys}/tx/+/events": self._on_tx_event, f"{sys}/lock/+/events": self._on_lock_event}

    def attach(self, session: BusSession) -> CoordinationView:
        for topic_filter, handler in self.subscriptions().items():
            session.subscribe(topic_filter, handler, qos=1)
        return self

    def _levels(self, topic: str) -> list[str]:
        return topic[len(self.root) + 1:].split("/")  # _sys, protocol, group, ...

    def _on_raft_status(self, msg: ReceivedMessage) -> None:
        levels = self._levels(msg.topic)
        if len(levels) != 5:
            return
        group, node = levels[2], levels[3]
        with self._lock:
            nodes = self.raft.get(group)
            if not msg.payload:  # a removed node's status is cleared
                if nodes is not None:
                    nodes.pop(node, None)
                return
            body = _json_object(msg)
            if body is None:
                return
            if nodes is None:
                if len(self.raft) >= _MAX_GROUPS:
                    return
                nodes = self.raft[group] = {}
            if node in nodes or len(nodes) < _MAX_NODES:
                nodes[node] = body

    def _on_open(self, msg: ReceivedMessage) -> None:
        body = _json_object(msg)
        group = self._levels(msg.topic)[2]
        with self._lock:
            if body is None:
                self.open_transactions.pop(group, None)
            elif group in self.open_transactions or len(self.open_transactions) < _MAX_GROUPS:
                self.open_transactions[group] = body

    def _remember(self, table: dict[str, deque[dict[str, Any]]], msg: ReceivedMessage) -> None:
        body = _json_object(msg)
        if body is None:
            return
        group = self._levels(msg.topic)[2]
        with self._lock:
            recent = table.get(group)
            if recent is None:
                if len(table) >= _MAX_GROUPS:
                    return
                recent = table[group] = deque(maxlen=RECENT)
            recent.append(body)

    def _on_tx_event(self, msg: ReceivedMessage) -> None:
        self._remember(self.tx_events, msg)

    def _on_lock_event(self, msg: ReceivedMessage) -> None:
        self._remember(self.lock_events, msg)

    def raft_groups(self) -> list[dict[str, Any]]:
        """Each group: its nodes' statuses and the leader most of them name (newest term wins)."""
        with self._lock:
            groups = {g: {n: dict(s) for n, s in nodes.items()} for g, nodes in self.raft.items()}
        out = []
        for group, nodes in sorted(groups.items()):
            best = max(nodes.values(), key=lambda s: (_int(s.get("term")), s.get("role") == "leader"),
                       default={})
            out.append({"group": group, "leader": best.get("leader") or None, "term": _int(best.get("term")),
                        "nodes": [nodes[n] | {"node": nodes[n].get("node", n)} for n in sorted(nodes)]})
        return out

    def transactions(self) -> list[dict[str, Any]]:
        with self._lock:
            groups = sorted(set(self.open_transactions) | set(self.tx_events))
            return [{"group": g, "open": self.open_transactions.get(g),
                     "events": list(self.tx_events.get(g, ()))[::-1]} for g in groups]

    def locks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"group": g, "events": list(e)[::-1]} for g, e in sorted(self.lock_events.items())]


def _int(value: object) -> int:
    return value if type(value) is int else 0
