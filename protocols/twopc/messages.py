"""The two-phase commit wire records: what clients, the group and participants send each other.

They travel under ``{root}/_sys/tx/{group}/...`` inside the edgebus envelope
like every other record (``schemas.messages.encode_record`` /
``decode_record`` know them once this module is imported); :func:`encode_message`
and :func:`decode_message` are the one path for bare msgpack bodies. Each record
is a frozen, slotted dataclass that validates itself, so a decoded record is a
valid one. Keys a decoder does not know are kept in ``extra``; a newer record
version is refused with :class:`UnsupportedVersion`. Each record spells out its
own ``to_wire``/``from_wire``/``to_json`` although they look alike: the wire
keys (``tx``, not ``tx_id``) are the format's contract, kept explicit per record.

Who sends what:

* client -> group: :class:`BeginRequest` (the transaction: participants and the
  work each must prepare), :class:`StatusQuery`;
* group -> participant: :class:`Prepare`, :class:`Decision`, :class:`StatusReply`;
* participant -> group: :class:`Vote`, :class:`Ack`, :class:`StatusQuery`;
* group -> client: :class:`Decision` (the outcome, once it is in the log).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import msgpack

from schemas.envelope import pack_body
from schemas.errors import CodecError, TxError
from schemas.record_base import (
    INT64_MAX,
    Record,
    WireFields,
    check_int,
    check_text,
    empty_map,
    freeze_extra,
    jsonable,
    record_from_body,
    record_to_body,
    register_record,
)

__all__ = [
    "MAX_ID_CHARS",
    "MAX_PARTICIPANTS",
    "MAX_PAYLOAD_BYTES",
    "MAX_TIMEOUT_MS",
    "MAX_REASON_CHARS",
    "TX_MESSAGE_TYPES",
    "Ack",
    "BeginRequest",
    "Decision",
    "Outcome",
    "Part",
    "Prepare",
    "StatusQuery",
    "StatusReply",
    "TxMessage",
    "TxState",
    "Vote",
    "check_id",
    "check_parts",
    "check_reason",
    "decode_message",
    "encode_message",
]

MAX_ID_CHARS = 128
MAX_REASON_CHARS = 256
MAX_PARTICIPANTS = 64
MAX_PAYLOAD_BYTES = 64 * 1024
# A transaction that may stay undecided for more than a day is a mistake, not a timeout.
MAX_TIMEOUT_MS = 24 * 3600 * 1000


class Outcome(StrEnum):
    """The decision of a transaction; with presumed abort, no record means ABORT."""

    COMMIT = "commit"
    ABORT = "abort"


class TxState(StrEnum):
    """What the group knows of a transaction, as told in a :class:`StatusReply`."""

    COMMIT = "commit"
    ABORT = "abort"
    PENDING = "pending"  # begun, not decided yet: the decision will be sent when it is


def check_id(where: str, value: object) -> str:
    """A transaction, participant or client id: printable text of 1..128 characters."""
    try:
        return check_text(where, value, max_chars=MAX_ID_CHARS)
    except CodecError as exc:
        raise TxError(str(exc)) from None


def check_reason(where: str, value: object) -> str:
    """A human-readable reason (may be empty), at most 256 characters."""
    try:
        return check_text(where, value, max_chars=MAX_REASON_CHARS, empty_ok=True)
    except CodecError as exc:
        raise TxError(str(exc)) from None


def _check_int(where: str, value: object, lo: int, hi: int) -> int:
    try:
        return check_int(where, value, lo, hi)
    except CodecError as exc:
        raise TxError(str(exc)) from None


def _check_payload(where: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TxError(f"{where} must be bytes, not {type(value).__name__}")
    if len(value) > MAX_PAYLOAD_BYTES:
        raise TxError(f"{where} is {len(value)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return value


def check_ids(where: str, names: object) -> tuple[str, ...]:
    """A tuple of distinct ids (participants, votes, acks)."""
    if not isinstance(names, tuple):
        raise TxError(f"{where} must be a tuple of ids, not {type(names).__name__}")
    for name in names:
        check_id(f"{where} entry", name)
    if len(set(names)) != len(names):
        raise TxError(f"{where} names an id twice: {names!r:.120}")
    return names


def _check_participants(where: str, names: object) -> tuple[str, ...]:
    ids = check_ids(where, names)
    if not 1 <= len(ids) <= MAX_PARTICIPANTS:
        raise TxError(f"{where} must be a tuple of 1..{MAX_PARTICIPANTS} participant ids")
    return ids


def _check_bool(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TxError(f"{where} must be a bool, not {type(value).__name__}")
    return value


def _raw(fields: WireFields, key: str) -> Any:
    """A key's raw value (WireFields has no bytes getter); missing is a CodecError naming the key."""
    return fields._get(key)


def _finish(record: Record) -> None:
    object.__setattr__(record, "extra", freeze_extra(type(record), record.extra))


def _json(record: Record, view: dict[str, Any]) -> dict[str, Any]:
    view = {"type": record.TYPE, "version": record.VERSION, **view}
    if record.extra:
        view["extra"] = jsonable(record.extra)
    return view


@dataclass(frozen=True, slots=True)
class Part:
    """One participant of a transaction and the work it must prepare (opaque to the protocol)."""

    participant: str
    payload: bytes = b""

    def __post_init__(self) -> None:
        check_id("part participant", self.participant)
        _check_payload("part payload", self.payload)


def check_parts(where: str, parts: object) -> tuple[Part, ...]:
    """1..64 parts with distinct participants."""
    if not isinstance(parts, tuple) or not all(isinstance(p, Part) for p in parts):
        raise TxError(f"{where} must be a tuple of Part")
    _check_participants(where, tuple(p.participant for p in parts))
    return parts


@register_record
@dataclass(frozen=True, slots=True)
class BeginRequest(Record):
    """A client asks the group to run a transaction over ``parts``, aborted if undecided in ``timeout_ms``."""

    TYPE: ClassVar[str] = "tx_begin"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset({"tx", "client", "timeout_ms", "parts"})
    RECEIVER: ClassVar[str] = "coordination group"

    tx_id: str
    client: str
    timeout_ms: int
    parts: tuple[Part, ...]
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_id("tx_begin tx_id", self.tx_id)
        check_id("tx_begin client", self.client)
        _check_int("tx_begin timeout_ms", self.timeout_ms, 1, MAX_TIMEOUT_MS)
        check_parts("tx_begin parts", self.parts)
        _finish(self)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx_id, "client": self.client, "timeout_ms": self.timeout_ms,
                "parts": [[p.participant, p.payload] for p in self.parts]}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> BeginRequest:
        parts = []
        for item in fields.get_list("parts"):
            if not isinstance(item, list) or len(item) != 2:
                raise fields.error("parts", "must hold [participant, payload] pairs")
            parts.append(Part(item[0], item[1]))
        return cls(fields.get_str("tx"), fields.get_str("client"), fields.get_int("timeout_ms"),
                   tuple(parts), extra)

    def to_json(self) -> dict[str, Any]:
        return _json(self, {"tx_id": self.tx_id, "client": self.client, "timeout_ms": self.timeout_ms,
                            "parts": [{"participant": p.participant, "payload": p.payload.hex()}
                                      for p in self.parts]})

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(p.participant for p in self.parts)


@register_record
@dataclass(frozen=True, slots=True)
class Prepare(Record):
    """The group asks ``participant`` to prepare its part of ``tx_id`` and vote."""

    TYPE: ClassVar[str] = "tx_prepare"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset({"tx", "participant", "participants", "payload",
                                                     "deadline_ms"})
    RECEIVER: ClassVar[str] = "participant"

    tx_id: str
    participant: str
    participants: tuple[str, ...]
    payload: bytes
    deadline_ms: int
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_id("tx_prepare tx_id", self.tx_id)
        check_id("tx_prepare participant", self.participant)
        _check_participants("tx_prepare participants", self.participants)
        if self.participant not in self.participants:
            raise TxError(f"tx_prepare: {self.participant!r} is not among the participants")
        _check_payload("tx_prepare payload", self.payload)
        _check_int("tx_prepare deadline_ms", self.deadline_ms, 0, INT64_MAX)
        _finish(self)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx_id, "participant": self.participant, "participants": list(self.participants),
                "payload": self.payload, "deadline_ms": self.deadline_ms}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Prepare:
        return cls(fields.get_str("tx"), fields.get_str("participant"),
                   tuple(fields.get_str_list("participants")), _raw(fields, "payload"),
                   fields.get_int("deadline_ms"), extra)

    def to_json(self) -> dict[str, Any]:
        return _json(self, {"tx_id": self.tx_id, "participant": self.participant,
                            "participants": list(self.participants), "payload": self.payload.hex(),
                            "deadline_ms": self.deadline_ms})


@register_record
@dataclass(frozen=True, slots=True)
class Vote(Record):
    """``participant``'s vote on ``tx_id``: yes only once its prepared state is durable."""

    TYPE: ClassVar[str] = "tx_vote"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset({"tx", "participant", "yes", "reason"})
    RECEIVER: ClassVar[str] = "coordination group"

    tx_id: str
    participant: str
    yes: bool
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_id("tx_vote tx_id", self.tx_id)
        check_id("tx_vote participant", self.participant)
        _check_bool("tx_vote yes", self.yes)
        check_reason("tx_vote reason", self.reason)
        _finish(self)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx_id, "participant": self.participant, "yes": self.yes, "reason": self.reason}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Vote:
        return cls(fields.get_str("tx"), fields.get_str("participant"), _raw(fields, "yes"),
                   fields.get_str("reason"), extra)

    def to_json(self) -> dict[str, Any]:
        return _json(self, {"tx_id": self.tx_id, "participant": self.participant, "yes": self.yes,
                            "reason": self.reason})


@register_record
@dataclass(frozen=True, slots=True)
class Decision(Record):
    """The logged outcome of ``tx_id``; sent only once the decision is committed in the group's log."""

    TYPE: ClassVar[str] = "tx_decision"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset({"tx", "outcome", "reason"})
    RECEIVER: ClassVar[str] = "participant"

    tx_id: str
    outcome: Outcome
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_id("tx_decision tx_id", self.tx_id)
        object.__setattr__(self, "outcome", _outcome("tx_decision outcome", self.outcome))
        check_reason("tx_decision reason", self.reason)
        _finish(self)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx_id, "outcome": self.outcome.value, "reason": self.reason}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Decision:
        return cls(fields.get_str("tx"), fields.get_str("outcome"),  # type: ignore[arg-type]
                   fields.get_str("reason"), extra)

    def to_json(self) -> dict[str, Any]:
        return _json(self, {"tx_id": self.tx_id, "outcome": self.outcome.value, "reason": self.reason})


@register_record
@dataclass(frozen=True, slots=True)
class Ack(Record):
    """``participant`` has applied ``outcome`` of ``tx_id`` and made that durable."""

    TYPE: ClassVar[str] = "tx_ack"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset({"tx", "participant", "outcome"})
    RECEIVER: ClassVar[str] = "coordination group"

    tx_id: str
    participant: str
    outcome: Outcome
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_id("tx_ack tx_id", self.tx_id)
        check_id("tx_ack participant", self.participant)
        object.__setattr__(self, "outcome", _outcome("tx_ack outcome", self.outcome))
        _finish(self)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx_id, "participant": self.participant, "outcome": self.outcome.value}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Ack:
        return cls(fields.get_str("tx"), fields.get_str("participant"),
                   fields.get_str("outcome"), extra)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return _json(self, {"tx_id": self.tx_id, "participant": self.participant,
                            "outcome": self.outcome.value})


@register_record
@dataclass(frozen=True, slots=True)
class StatusQuery(Record):
    """``asker`` (an in-doubt participant, or a client) asks the group what became of ``tx_id``."""

    TYPE: ClassVar[str] = "tx_status_query"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset({"tx", "asker"})
    RECEIVER: ClassVar[str] = "coordination group"

    tx_id: str
    asker: str
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_id("tx_status_query tx_id", self.tx_id)
        check_id("tx_status_query asker", self.asker)
        _finish(self)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx_id, "asker": self.asker}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> StatusQuery:
        return cls(fields.get_str("tx"), fields.get_str("asker"), extra)

    def to_json(self) -> dict[str, Any]:
        return _json(self, {"tx_id": self.tx_id, "asker": self.asker})


@register_record
@dataclass(frozen=True, slots=True)
class StatusReply(Record):
    """What the group's log says of ``tx_id``; COMMIT/ABORT are final, PENDING is not."""

    TYPE: ClassVar[str] = "tx_status_reply"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset({"tx", "state", "reason"})
    RECEIVER: ClassVar[str] = "participant"

    tx_id: str
    state: TxState
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_id("tx_status_reply tx_id", self.tx_id)
        try:
            object.__setattr__(self, "state", TxState(self.state))
        except ValueError:
            raise TxError(f"tx_status_reply state must be one of {[s.value for s in TxState]}, "
                          f"not {self.state!r:.40}") from None
        check_reason("tx_status_reply reason", self.reason)
        _finish(self)

    def to_wire(self) -> dict[str, Any]:
        return {"tx": self.tx_id, "state": self.state.value, "reason": self.reason}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> StatusReply:
        return cls(fields.get_str("tx"), fields.get_str("state"),  # type: ignore[arg-type]
                   fields.get_str("reason"), extra)

    def to_json(self) -> dict[str, Any]:
        return _json(self, {"tx_id": self.tx_id, "state": self.state.value, "reason": self.reason})

    @property
    def outcome(self) -> Outcome | None:
        """The decision, or None while the transaction is pending."""
        return None if self.state is TxState.PENDING else Outcome(self.state.value)


def _outcome(where: str, value: object) -> Outcome:
    try:
        return Outcome(value if isinstance(value, str) else "")
    except ValueError:
        raise TxError(f"{where} must be 'commit' or 'abort', not {value!r:.40}") from None


TxMessage = BeginRequest | Prepare | Vote | Decision | Ack | StatusQuery | StatusReply
TX_MESSAGE_TYPES = (BeginRequest, Prepare, Vote, Decision, Ack, StatusQuery, StatusReply)
_MESSAGE_TYPES = TX_MESSAGE_TYPES


def encode_message(message: TxMessage) -> bytes:
    """The record as a bare msgpack map (inside an envelope, use ``schemas.messages.encode_record``)."""
    if not isinstance(message, _MESSAGE_TYPES):
        raise TxError(f"not a two-phase commit message: {type(message).__name__}")
    return pack_body(record_to_body(message))  # any Mapping (a frozen extra) packs as a map


def decode_message(data: bytes) -> TxMessage:
    """Inverse of :func:`encode_message`: raises a CodecError (never anything else) on bad input."""
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise TxError(f"two-phase commit message is not valid msgpack: {exc}") from exc
    record = record_from_body(body)
    if not isinstance(record, _MESSAGE_TYPES):
        raise TxError(f"{record.TYPE} is not a two-phase commit message")
    return record
