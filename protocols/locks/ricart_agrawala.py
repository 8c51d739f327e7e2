"""Ricart-Agrawala mutual exclusion: a lock for a small group with no Raft group behind it.

Each member runs one :class:`RicartAgrawalaNode` per lock. To enter, a node
sends a request stamped with its Lamport clock to every other member and enters
once each has replied. A member replies at once unless it holds the lock, or
wants it and its own request is older (ties broken by node id); then it defers
the reply until it leaves. Total order of ``(timestamp, node_id)`` makes the
oldest request win everywhere. 2(n-1) messages per entry, no coordinator.

Membership is explicit: the driver calls :meth:`member_joined` on a member's
birth / ``online`` status and :meth:`member_left` on its ``offline`` status
(its MQTT will). A departed member's reply is no longer awaited and its deferred
request is dropped, so a crashed member does not block the others forever.

Weaker than the Raft lock service — use it only where that is acceptable:

* **No fencing tokens.** Nothing orders successive holders across the group,
  so a resource cannot refuse a stale holder's writes. A holder that is paused
  and declared offline may wake up inside the critical section next to a new
  holder.
* **Failure detection is the broker's will.** Safety assumes ``member_left`` is
  called only for members that really stopped. A false ``offline`` (a network
  blip longer than the keepalive, a broker restart, a partition between the
  member and the broker) lets two members in at once. While a member is
  unreachable but not yet declared offline, everyone who wants the lock waits.
* **Safety is argued (and tested) only under reliable FIFO delivery per pair
  of members and one agreed membership.** A lost request or reply blocks the
  requester until the silent member is declared offline. Replies echo the
  request's timestamp, so a duplicated or late reply cannot let a newer
  request in; but the broker does not promise any of this across
  persistent-session redelivery, bridges or clusters (DESIGN.md section 3).
* **Every member must answer for anyone to enter**: it tolerates no slow
  member, and it is O(n) messages per entry, so keep groups small (a handful
  of devices on one site).
* No leases: a holder keeps the lock until it releases or is declared offline.

Pure and sans-I/O: every input returns :class:`RAEffects` (messages to send and
whether this node just entered); the driver does the sending.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from protocols.locks.commands import check_int, check_name
from schemas.errors import LockCodecError, LockError

__all__ = [
    "RAEffects",
    "RAMessage",
    "RARequest",
    "RAReply",
    "RAState",
    "RicartAgrawalaNode",
    "Send",
    "decode_ra_message",
    "encode_ra_message",
]

_MAX_TS = 2**63 - 1


class RAState(StrEnum):
    RELEASED = "released"
    WANTED = "wanted"
    HELD = "held"


@dataclass(frozen=True, slots=True)
class RARequest:
    """``sender`` asks to enter; ``timestamp`` is its Lamport clock at the request."""

    sender: str
    timestamp: int

    def __post_init__(self) -> None:
        check_name("sender", self.sender)
        check_int("timestamp", self.timestamp, 1, _MAX_TS)


# The same fields as RARequest, kept a type of its own: the algorithm dispatches on the message's type.
@dataclass(frozen=True, slots=True)
class RAReply:
    """``sender`` lets the addressee in; echoes the request's ``timestamp`` so stale replies are ignored."""

    sender: str
    timestamp: int

    def __post_init__(self) -> None:
        check_name("sender", self.sender)
        check_int("timestamp", self.timestamp, 1, _MAX_TS)


RAMessage = RARequest | RAReply


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: RAMessage


@dataclass(frozen=True, slots=True)
class RAEffects:
    """What one input asks the driver to do: send these, and report entry if ``entered``."""

    sends: tuple[Send, ...] = ()
    entered: bool = False


def encode_ra_message(message: RAMessage) -> bytes:
    """``[1, "req" | "rep", sender, timestamp]`` as msgpack."""
    kind = "req" if isinstance(message, RARequest) else "rep"
    return msgpack.packb([1, kind, message.sender, message.timestamp], use_bin_type=True)


def decode_ra_message(data: bytes) -> RAMessage:
    try:
        body: Any = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise LockCodecError(f"Ricart-Agrawala message is not msgpack: {exc}") from exc
    if not isinstance(body, list) or len(body) != 4 or body[0] != 1 or body[1] not in ("req", "rep"):
        raise LockCodecError(f"not a Ricart-Agrawala message: {body!r:.80}")
    try:
        cls = RARequest if body[1] == "req" else RAReply
        return cls(body[2], body[3])
    except LockError as exc:
        raise LockCodecError(f"invalid Ricart-Agrawala message: {exc}") from exc


class RicartAgrawalaNode:
    """One member's view of one lock. Feed it local calls and received messages."""

    def __init__(self, node_id: str, members: Iterable[str] = ()) -> None:
        self.node_id = check_name("node_id", node_id)
        self._members = {check_name("member", m) for m in members} - {node_id}
        self._clock = 0
        self._state = RAState.RELEASED
        self._request_ts = 0
        self._awaiting: set[str] = set()
        self._deferred: dict[str, int] = {}  # member -> timestamp of the request we owe a reply

    @property
    def state(self) -> RAState:
        return self._state

    @property
    def clock(self) -> int:
        return self._clock

    @property
    def members(self) -> frozenset[str]:
        """The other members (never this node)."""
        return frozenset(self._members)

    @property
    def awaiting(self) -> frozenset[str]:
        return frozenset(self._awaiting)

    @property
    def deferred(self) -> frozenset[str]:
        return frozenset(self._deferred)

    def request(self) -> RAEffects:
        """Ask to enter; enters at once if this node is alone."""
        if self._state is not RAState.RELEASED:
            raise LockError(f"{self.node_id} cannot request while {self._state}")
        self._clock += 1
        self._request_ts = self._clock
        self._state = RAState.WANTED
        self._awaiting = set(self._members)
        request = RARequest(self.node_id, self._request_ts)
        sends = tuple(Send(m, request) for m in sorted(self._members))
        return RAEffects(sends, self._maybe_enter())

    def release(self) -> RAEffects:
        """Leave the critical section (or give up waiting) and answer every deferred request."""
        if self._state is RAState.RELEASED:
            raise LockError(f"{self.node_id} holds nothing to release")
        self._state = RAState.RELEASED
        self._awaiting.clear()
        sends = tuple(Send(m, RAReply(self.node_id, ts)) for m, ts in sorted(self._deferred.items()))
        self._deferred.clear()
        return RAEffects(sends)

    def on_message(self, message: RAMessage) -> RAEffects:
        if isinstance(message, RARequest):
            return self._on_request(message)
        if (
            self._state is RAState.WANTED
            and message.timestamp == self._request_ts
            and message.sender in self._awaiting
        ):
            self._awaiting.discard(message.sender)
            return RAEffects((), self._maybe_enter())
        return RAEffects()  # a duplicate, or a reply to a request we have given up

    def _on_request(self, request: RARequest) -> RAEffects:
        # Lamport: our next request must be stamped later than any we have seen.
        self._clock = max(self._clock, request.timestamp)
        ours_first = self._state is RAState.WANTED and (self._request_ts, self.node_id) < (
            request.timestamp, request.sender)
        if self._state is RAState.HELD or ours_first:
            self._deferred[request.sender] = request.timestamp
            return RAEffects()
        return RAEffects((Send(request.sender, RAReply(self.node_id, request.timestamp)),))

    def member_joined(self, node_id: str) -> RAEffects:
        """A new member: if we are waiting, ask it too rather than assume it knows of us."""
        check_name("member", node_id)
        if node_id == self.node_id or node_id in self._members:
            return RAEffects()
        self._members.add(node_id)
        if self._state is not RAState.WANTED:
            return RAEffects()
        self._awaiting.add(node_id)
        return RAEffects((Send(node_id, RARequest(self.node_id, self._request_ts)),))

    def member_left(self, node_id: str) -> RAEffects:
        """A member is gone (its will said ``offline``): stop waiting for it and forget what we owe it."""
        self._members.discard(node_id)
        self._deferred.pop(node_id, None)
        if node_id not in self._awaiting:
            return RAEffects()
        self._awaiting.discard(node_id)
        return RAEffects((), self._maybe_enter())

    def _maybe_enter(self) -> bool:
        if self._state is RAState.WANTED and not self._awaiting:
            self._state = RAState.HELD
            return True
        return False
