"""Membership on the bus and this coordinator's share of the devices (``[cluster]``).

Each member keeps a lean MQTT connection (:class:`~broker.coordination.transport.PeerTransport`)
whose presence is ``{root}/_sys/cluster/{group}/members/{member}``: ``online``
retained on every connection, ``offline`` retained as its will (the broker
publishes it when the process dies, ``kill -9`` included: the kernel closes the
socket) and said on a clean stop. Every member reads every member's presence
and every device's retained birth (``{root}/+/birth``: a device is known once
it was born), and gives each device to the member the rendezvous hash picks
among those online (:mod:`protocols.sharding`). All of them compute the same
table from the same retained state, so no vote is needed.

A device moving in is taken through :meth:`FleetProcessor.take_devices`
(its stored accounting, then per-device subscriptions); one moving out is
dropped through :meth:`FleetProcessor.release_devices`. Both ends may hold a
device for a moment (the new owner subscribes as soon as it sees the change,
the old one unsubscribes as soon as it does): the store takes each sample
once whoever writes it (coordinator/store/sql_write.py locks the device row
before its overlap check), and a sample neither stored is never acknowledged,
so its agent sends it again to the owner. Nothing accepted is lost or stored twice.
Nor is any of it reported missing: the store merges each commit's accounting
into the stored one (coordinator/store/sql_write.py), so the old owner's last
batches, committed after the new owner read the device's accounting, reach the
new owner with its next commit of the device.

The member's share is published retained on
``{root}/_sys/cluster/{group}/devices/{member}`` (JSON: member, members,
devices, time_ms) after every change; :func:`read_cluster` reads it for
``edge-coordinator cluster show``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from broker.coordination.transport import PeerTransport
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from coordinator.cluster.config import ClusterConfig
from protocols.sharding import assign
from schemas.errors import BusError, TopicError
from schemas.topics import TopicKind, TopicTree

__all__ = ["DeviceShards", "read_cluster"]

logger = logging.getLogger(__name__)

PROTOCOL = "cluster"


class DeviceShards:
    """Keeps this coordinator's share of the devices as the members come and go (see the module docstring)."""

    def __init__(self, bus: BusConfig, config: ClusterConfig, member: str, *,
                 take: Callable[[set[str]], None], release: Callable[[set[str]], None]) -> None:
        self.config = config
        self.member = member
        self._take = take
        self._release = release
        self.topics = TopicTree(bus.root)
        self.presence_topic = self.topics.sys(PROTOCOL, config.group, "members", member)
        self.share_topic = self.topics.sys(PROTOCOL, config.group, "devices", member)
        self._transport = PeerTransport(bus, f"{member}-cluster", presence_topic=self.presence_topic)
        self._transport.subscribe(self.topics.sys(PROTOCOL, config.group, "members") + "/+", self._on_member)
        self._transport.subscribe(self.topics.all_births(), self._on_birth)
        self._transport.subscribe(self.topics.sys(PROTOCOL, config.group, "devices") + "/+", self._on_share)
        #: Every member's presence and last published share, as ``edge-coordinator cluster show`` reads them.
        self._table: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._members: dict[str, bool] = {}
        self._devices: set[str] = set()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: The devices this member takes now, and the members it last saw online.
        self.owned: frozenset[str] = frozenset()
        self.members: tuple[str, ...] = ()
        #: Changes of this member's share applied (each a take and/or a release).
        self.moves = 0

    def start(self) -> DeviceShards:
        self._transport.start()
        self._thread = threading.Thread(target=self._run, name="edgebus-cluster", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Say ``offline`` (the others take the devices) and stop; the devices are not released here:
        the coordinator is stopping and stores what it already received."""
        self._stopping.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._transport.wait_connected(0):
            self._transport.publish(self.share_topic, b"", qos=1, retain=True)
        self._transport.stop()

    # -- network thread ------------------------------------------------------------------------

    def _on_member(self, message: ReceivedMessage) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        with self._lock:
            self._members[name] = message.payload == b"online"
            note_member_message(self._table, message)
        self._changed.set()

    def _on_share(self, message: ReceivedMessage) -> None:
        with self._lock:
            note_member_message(self._table, message)

    def snapshot(self) -> dict[str, Any]:
        """This member's view for the API: group, itself, the live members, each member's published share."""
        with self._lock:
            table = {name: dict(entry) for name, entry in sorted(self._table.items())}
        return {"group": self.config.group, "member": self.member, "members": list(self.members),
                "owned": sorted(self.owned), "moves": self.moves, "table": table}

    def _on_birth(self, message: ReceivedMessage) -> None:
        try:
            parsed = self.topics.parse(message.topic)
        except TopicError:
            return
        if parsed.kind is not TopicKind.BIRTH or parsed.device is None:
            return
        with self._lock:
            if message.payload:
                self._devices.add(parsed.device)
            else:  # a cleared retained birth: the device was decommissioned
                self._devices.discard(parsed.device)
        self._changed.set()

    # -- the assignment thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._transport.wait_connected(0.2):
            if self._stopping.is_set():
                return
        # The others' retained presence follows the SUBACK at once; do not take everything meanwhile.
        self._stopping.wait(self.config.settle_s)
        while not self._stopping.is_set():
            self._changed.clear()
            try:
                self._apply()
            except Exception:  # the store or the bus failed mid-change: try again shortly
                logger.exception("cluster %s: applying the device assignment failed; retrying",
                                 self.config.group)
                self._stopping.wait(1.0)
                self._changed.set()
            self._changed.wait(1.0)

    def _apply(self) -> None:
        with self._lock:
            live = {m for m, up in self._members.items() if up} | {self.member}
            devices = set(self._devices)
        mine = set(assign(devices, live)[self.member])
        gained, lost = mine - self.owned, self.owned - mine
        members = tuple(sorted(live))
        if not gained and not lost and members == self.members:
            return
        if lost:
            self._release(set(lost))
            self.owned = self.owned - lost
        if gained:
            self._take(gained)
            self.owned = self.owned | gained
        self.members = members
        if gained or lost:
            self.moves += 1
            logger.info("cluster %s: members %s; %s takes %d devices (+%d, -%d)", self.config.group,
                        ", ".join(members), self.member, len(self.owned), len(gained), len(lost))
        share = {"member": self.member, "members": list(members), "devices": sorted(self.owned),
                 "time_ms": time.time_ns() // 1_000_000}
        self._transport.publish(self.share_topic, json.dumps(share, separators=(",", ":")), qos=1,
                                retain=True)


def note_member_message(table: dict[str, dict[str, Any]], message: ReceivedMessage) -> None:
    """Fold one ``members/{m}`` presence or ``devices/{m}`` share into member -> {online, devices, ...}."""
    *_, kind, name = message.topic.split("/")
    entry = table.setdefault(name, {"online": False, "devices": [], "members": [], "time_ms": None})
    if kind == "members":
        entry["online"] = message.payload == b"online"
    elif message.payload:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(body, dict):
            entry.update({k: body.get(k) for k in ("devices", "members", "time_ms")})


def read_cluster(bus: BusConfig, group: str, wait_s: float = 1.5) -> dict[str, dict[str, Any]]:
    """Each member's presence and last published share: member -> {online, devices, members, time_ms}."""
    topics = TopicTree(bus.root)
    session = BusSession(replace(bus, client_id=f"cluster-cli-{uuid.uuid4().hex[:8]}", clean_start=True,
                                 device=None, outbox_path=None))
    got: dict[str, dict[str, Any]] = {}
    session.subscribe(topics.sys_group(PROTOCOL, group), lambda m: note_member_message(got, m))
    session.start()
    try:
        if not session.wait_connected(bus.connect_timeout + 5) or not session.wait_subscribed(10):
            raise BusError(f"cannot reach the broker at {bus.host}:{bus.port}")
        time.sleep(wait_s)  # retained messages follow the SUBACK at once; there is no end marker
    finally:
        session.stop(flush_timeout=0)
    return got
