"""The one wire format of the coordination topics: msgpack inside the edgebus envelope.

Every payload is ``envelope([WIRE_VERSION, kind, field, ...])``. Raft's frozen
message dataclasses, the client request/reply records and the operator's
membership requests (:class:`AdminRequest` / :class:`AdminReplyMsg`) all go through
:func:`encode` and come back through :func:`decode`; a payload of another
version is refused with :class:`UnsupportedVersion` and anything malformed with
:class:`CodecError`, so a driver can drop it and carry on (Raft tolerates loss).
A decoded object has the types its dataclass declares (a node id that is a
number, or a byte field given as an integer, is malformed: ``bytes(10**9)``
would have allocated a gigabyte).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

from protocols.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    Message,
    Snapshot,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from schemas.envelope import EnvelopeCodec
from schemas.errors import CodecError, UnsupportedVersion
from schemas.messages import DEFAULT_CODEC

__all__ = [
    "ADMIN_ACTIONS",
    "WIRE_VERSION",
    "AdminReplyMsg",
    "AdminRequest",
    "AdminStatus",
    "ClientReplyMsg",
    "ClientRequest",
    "LockEventMsg",
    "MessageBatch",
    "WireObject",
    "decode",
    "encode",
    "entry_from_list",
    "entry_to_list",
]

WIRE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's command: ``op`` is ``lock`` (body: an encoded lock command), ``append`` or ``read``."""

    client_id: str
    seq: int
    op: str
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class ClientReplyMsg:
    """The leader's answer to ``(client_id, seq)``; ``result`` is the state machine's bytes."""

    seq: int
    index: int
    leader: str
    result: bytes


@dataclass(frozen=True, slots=True)
class LockEventMsg:
    """Something that happened to a session without it asking: a queued grant or a cancelled wait."""

    kind: str  # "granted" | "cancelled"
    lock_name: str
    token: int
    lease_deadline_ms: int
    reason: str = ""


ADMIN_ACTIONS = ("add", "remove", "transfer", "step_down", "members")


class AdminStatus:
    """The ``status`` of an :class:`AdminReplyMsg`."""

    OK = "ok"  # done (or already so): the change is committed / the target leads
    PENDING = "pending"  # accepted; the final answer follows (``reason`` says what it waits for)
    NOT_LEADER = "not_leader"  # ask ``leader`` instead (empty: nobody known yet)
    BUSY = "busy"  # not now (a change or transfer in progress, a fresh leader): retry later
    REFUSED = "refused"  # never, as asked: ``reason`` says what to do instead


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """An operator's request to the leader, retried with the same ``seq`` until answered.

    ``action``: ``add`` / ``remove`` a voter ``node``; ``transfer`` leadership to
    ``node``; ``step_down`` (leadership off ``node``, to the most caught-up
    follower); ``members`` (a query). Every action is stated as the outcome
    wanted, so a retry that finds it done is answered ``ok``.
    """

    client_id: str
    seq: int
    action: str
    node: str = ""


@dataclass(frozen=True, slots=True)
class AdminReplyMsg:
    """The answer to ``seq``: an :class:`AdminStatus`, the replier's leader and member set."""

    seq: int
    status: str
    leader: str
    reason: str = ""
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """Several Raft messages for one node in one MQTT publish (one Ready's worth, in order)."""

    messages: tuple[Message, ...]


WireObject = (Message | ClientRequest | ClientReplyMsg | LockEventMsg | MessageBatch | AdminRequest
              | AdminReplyMsg)
_RAFT_TYPES = (VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest, TimeoutNow)


def entry_to_list(e: Entry) -> list[Any]:
    return [e.term, e.index, e.kind.value, e.command, e.client_id, e.request_seq, list(e.members)]


def _bin(value: object) -> bytes:
    """A msgpack bin field (``bytes(n)`` of an integer would allocate n bytes)."""
    if type(value) is not bytes:
        raise CodecError(f"expected bin, not {type(value).__name__}")
    return value


def entry_from_list(v: list[Any]) -> Entry:
    term, index, kind, command, client_id, seq, members = v
    return Entry(term, index, EntryKind(kind), _bin(command), client_id, seq, tuple(members))


def _snapshot_to_list(s: Snapshot) -> list[Any]:
    return [s.index, s.term, list(s.members), s.data, [list(x) for x in s.sessions]]


def _snapshot_from_list(v: list[Any]) -> Snapshot:
    index, term, members, data, sessions = v
    return Snapshot(index, term, tuple(members), _bin(data),
                    tuple((c, q, _bin(r)) for c, q, r in sessions))


def _to_list(obj: WireObject) -> list[Any]:
    if isinstance(obj, VoteRequest):
        return ["vote", obj.src, obj.dst, obj.term, obj.last_index, obj.last_term, obj.pre_vote, obj.transfer]
    if isinstance(obj, VoteResponse):
        return ["vote_resp", obj.src, obj.dst, obj.term, obj.granted, obj.pre_vote]
    if isinstance(obj, AppendRequest):
        return ["append", obj.src, obj.dst, obj.term, obj.prev_index, obj.prev_term,
                [entry_to_list(e) for e in obj.entries], obj.commit]
    if isinstance(obj, AppendResponse):
        return ["append_resp", obj.src, obj.dst, obj.term, obj.success, obj.match_index,
                obj.rejected_index, obj.hint_index, obj.hint_term]
    if isinstance(obj, SnapshotRequest):
        return ["snapshot", obj.src, obj.dst, obj.term, _snapshot_to_list(obj.snapshot)]
    if isinstance(obj, TimeoutNow):
        return ["timeout_now", obj.src, obj.dst, obj.term]
    if isinstance(obj, ClientRequest):
        return ["req", obj.client_id, obj.seq, obj.op, obj.body]
    if isinstance(obj, ClientReplyMsg):
        return ["reply", obj.seq, obj.index, obj.leader, obj.result]
    if isinstance(obj, LockEventMsg):
        return ["lock_event", obj.kind, obj.lock_name, obj.token, obj.lease_deadline_ms, obj.reason]
    if isinstance(obj, MessageBatch):
        return ["batch", [_to_list(m) for m in obj.messages]]
    if isinstance(obj, AdminRequest):
        return ["admin", obj.client_id, obj.seq, obj.action, obj.node]
    if isinstance(obj, AdminReplyMsg):
        return ["admin_reply", obj.seq, obj.status, obj.leader, obj.reason, list(obj.members)]
    raise CodecError(f"not a coordination wire object: {type(obj).__name__}")


def _from_list(kind: str, f: list[Any]) -> WireObject:
    if kind == "vote":
        return VoteRequest(*f)
    if kind == "vote_resp":
        return VoteResponse(*f)
    if kind == "append":
        src, dst, term, prev_index, prev_term, entries, commit = f
        return AppendRequest(src, dst, term, prev_index, prev_term,
                             tuple(entry_from_list(e) for e in entries), commit)
    if kind == "append_resp":
        return AppendResponse(*f)
    if kind == "snapshot":
        src, dst, term, snap = f
        return SnapshotRequest(src, dst, term, _snapshot_from_list(snap))
    if kind == "timeout_now":
        return TimeoutNow(*f)
    if kind == "req":
        client_id, seq, op, body = f
        return ClientRequest(client_id, seq, op, _bin(body))
    if kind == "reply":
        seq, index, leader, result = f
        return ClientReplyMsg(seq, index, leader, _bin(result))
    if kind == "lock_event":
        return LockEventMsg(*f)
    if kind == "admin":
        client_id, seq, action, node = f
        if not (isinstance(client_id, str) and type(seq) is int and action in ADMIN_ACTIONS
                and isinstance(node, str)):
            raise CodecError("malformed admin request")
        return AdminRequest(client_id, seq, action, node)
    if kind == "admin_reply":
        seq, status, leader, reason, members = f
        return AdminReplyMsg(seq, str(status), str(leader), str(reason), tuple(str(m) for m in members))
    if kind == "batch":
        (items,) = f
        messages = []
        for item in items:
            ok = isinstance(item, list) and item and isinstance(item[0], str)
            m = _from_list(item[0], item[1:]) if ok else None
            if not isinstance(m, _RAFT_TYPES):
                raise CodecError("a batch holds Raft messages only")
            messages.append(m)
        return MessageBatch(tuple(messages))
    raise CodecError(f"unknown coordination message kind {kind!r}")


def encode(obj: WireObject, codec: EnvelopeCodec = DEFAULT_CODEC) -> bytes:
    """``obj`` as an envelope; the single encode path of every coordination topic."""
    return codec.encode([WIRE_VERSION, *_to_list(obj)])


def decode(data: bytes, codec: EnvelopeCodec = DEFAULT_CODEC) -> WireObject:
    """Inverse of :func:`encode`; :class:`CodecError` (or :class:`UnsupportedVersion`) on anything else."""
    body = codec.decode(data)
    if not isinstance(body, list) or len(body) < 2 or type(body[0]) is not int:
        raise CodecError("a coordination message must be [version, kind, fields...]")
    if body[0] != WIRE_VERSION:
        raise UnsupportedVersion(f"coordination wire version {body[0]} is not supported (this build reads "
                                 f"{WIRE_VERSION})")
    if not isinstance(body[1], str):
        raise CodecError("a coordination message kind must be a string")
    try:
        obj = _from_list(body[1], body[2:])
        _check_types(obj)
        return obj
    except CodecError:
        raise
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise CodecError(f"malformed coordination {body[1]!r} message: {exc}") from exc


_HINTS: dict[type, dict[str, Any]] = {}


def _check_types(obj: object) -> None:
    """Refuse a decoded dataclass whose fields do not have their declared types (recursively)."""
    cls = type(obj)
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        _check_value(f"{cls.__name__}.{f.name}", getattr(obj, f.name), hints[f.name])


def _check_value(where: str, value: object, hint: Any) -> None:
    origin = typing.get_origin(hint)
    if hint in (int, str, bytes, bool):
        ok = type(value) is hint  # bool is not an int here, nor an int a bool
    elif origin is tuple:
        ok = type(value) is tuple
        if ok:
            args = typing.get_args(hint)
            assert isinstance(value, tuple)
            if len(args) == 2 and args[1] is Ellipsis:
                for item in value:
                    _check_value(where, item, args[0])
            elif len(args) != len(value):
                ok = False
            else:
                for item, arg in zip(value, args, strict=True):
                    _check_value(where, item, arg)
    elif origin in (typing.Union, types.UnionType):
        ok = False
        for arg in typing.get_args(hint):
            try:
                _check_value(where, value, arg)
            except CodecError:
                continue
            ok = True
            break
    elif hint is type(None):
        ok = value is None
    elif isinstance(hint, type) and (issubclass(hint, enum.Enum) or dataclasses.is_dataclass(hint)):
        ok = isinstance(value, hint)
        if ok and dataclasses.is_dataclass(hint):
            _check_types(value)
    else:
        ok = True  # Any
    if not ok:
        raise CodecError(f"malformed coordination message: {where} is {type(value).__name__}, not {hint}")
