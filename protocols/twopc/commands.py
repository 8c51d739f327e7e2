"""Commands of the transaction table (the group's decision log) and their one binary encoding.

The manager (on the Raft leader) proposes a command; the driver stamps it with
the leader's time and appends the stamped entry to the log; every replica
applies the same committed entries in the same order (see
:class:`protocols.twopc.table.TxTable`). Time travels inside the entry: replicas
never read a clock.

Wire form (msgpack, so another language can decode it)::

    command: [1, kind, field, ...]          # 1 = format version
    entry:   [1, now_ms, [kind, field, ...]]

``parts`` is ``[[participant, payload], ...]``; ``outcome`` is ``"commit"`` or
``"abort"``; id lists are arrays of strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from protocols.twopc.messages import (
    MAX_TIMEOUT_MS,
    Outcome,
    Part,
    check_id,
    check_ids,
    check_parts,
    check_reason,
)
from schemas.errors import TxError, UnsupportedVersion

__all__ = [
    "Begin",
    "Decide",
    "End",
    "Resolve",
    "TxCommand",
    "decode_command",
    "decode_entry",
    "encode_command",
    "encode_entry",
]

FORMAT_VERSION = 1
_UINT63 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Begin:
    """Record a new transaction; only a recorded transaction can ever commit (presumed abort)."""

    KIND: ClassVar[str] = "begin"
    tx_id: str
    client: str
    timeout_ms: int
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        check_id("begin tx_id", self.tx_id)
        check_id("begin client", self.client)
        if isinstance(self.timeout_ms, bool) or not isinstance(self.timeout_ms, int) or not (
                1 <= self.timeout_ms <= MAX_TIMEOUT_MS):
            raise TxError(f"begin timeout_ms must be an integer in 1..{MAX_TIMEOUT_MS}")
        check_parts("begin parts", self.parts)


@dataclass(frozen=True, slots=True)
class Decide:
    """Decide ``tx_id``; the first decision wins. A commit must name every participant's yes vote."""

    KIND: ClassVar[str] = "decide"
    tx_id: str
    outcome: Outcome
    reason: str = ""
    yes_votes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_id("decide tx_id", self.tx_id)
        try:
            object.__setattr__(self, "outcome", Outcome(self.outcome))
        except ValueError:
            raise TxError(f"decide outcome must be commit or abort, not {self.outcome!r:.40}") from None
        check_reason("decide reason", self.reason)
        check_ids("decide yes_votes", self.yes_votes)


@dataclass(frozen=True, slots=True)
class End:
    """Forget a decided transaction once every participant in ``acked`` has applied the decision."""

    KIND: ClassVar[str] = "end"
    tx_id: str
    acked: tuple[str, ...]

    def __post_init__(self) -> None:
        check_id("end tx_id", self.tx_id)
        check_ids("end acked", self.acked)


@dataclass(frozen=True, slots=True)
class Resolve:
    """A read of ``tx_id``'s fate through the log; a transaction the log never began is aborted for good."""

    KIND: ClassVar[str] = "resolve"
    tx_id: str

    def __post_init__(self) -> None:
        check_id("resolve tx_id", self.tx_id)


TxCommand = Begin | Decide | End | Resolve


def _to_list(command: TxCommand) -> list[Any]:
    if isinstance(command, Begin):
        parts = [[p.participant, p.payload] for p in command.parts]
        return [command.KIND, command.tx_id, command.client, command.timeout_ms, parts]
    if isinstance(command, Decide):
        return [command.KIND, command.tx_id, command.outcome.value, command.reason, list(command.yes_votes)]
    if isinstance(command, End):
        return [command.KIND, command.tx_id, list(command.acked)]
    if isinstance(command, Resolve):
        return [command.KIND, command.tx_id]
    raise TxError(f"not a transaction table command: {command!r:.80}")


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TxError(f"{where} must be an array")
    return tuple(value)


def _from_list(body: object) -> TxCommand:
    if not isinstance(body, list) or not body or not isinstance(body[0], str):
        raise TxError(f"a transaction command must be [kind, fields...], got {body!r:.80}")
    kind, *values = body
    arity = {"begin": 4, "decide": 4, "end": 2, "resolve": 1}.get(kind)
    if arity is None:
        raise TxError(f"unknown transaction command kind {kind!r:.40}")
    if len(values) != arity:
        raise TxError(f"transaction command {kind!r} needs {arity} fields, got {len(values)}")
    if kind == "begin":
        tx_id, client, timeout_ms, raw_parts = values
        if not isinstance(raw_parts, list) or not all(isinstance(p, list) and len(p) == 2 for p in raw_parts):
            raise TxError("begin parts must be [[participant, payload], ...]")
        return Begin(tx_id, client, timeout_ms, tuple(Part(p[0], p[1]) for p in raw_parts))
    if kind == "decide":
        tx_id, outcome, reason, votes = values
        return Decide(tx_id, outcome, reason, _strings(votes, "decide yes_votes"))
    if kind == "end":
        return End(values[0], _strings(values[1], "end acked"))
    return Resolve(values[0])


def _unpack(data: bytes, what: str) -> list[Any]:
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise TxError(f"{what} is not valid msgpack: {exc}") from exc
    if not isinstance(body, list) or not body or isinstance(body[0], bool) or not isinstance(body[0], int):
        raise TxError(f"{what} must be a msgpack array starting with a format version")
    if body[0] != FORMAT_VERSION:
        raise UnsupportedVersion(f"{what} format {body[0]} is not supported (this build reads 1)")
    return body


def encode_command(command: TxCommand) -> bytes:
    """The command as proposed (no time: the leader's driver stamps it)."""
    return msgpack.packb([FORMAT_VERSION, *_to_list(command)], use_bin_type=True)


def decode_command(data: bytes) -> TxCommand:
    """Inverse of :func:`encode_command`; raises a CodecError on anything else."""
    return _from_list(_unpack(data, "transaction command")[1:])


def encode_entry(now_ms: int, command: TxCommand) -> bytes:
    """A log entry: the command with the leader's time, applied identically by every replica."""
    if isinstance(now_ms, bool) or not isinstance(now_ms, int) or not 0 <= now_ms <= _UINT63:
        raise TxError(f"now_ms must be an integer in 0..{_UINT63}, got {now_ms!r}")
    return msgpack.packb([FORMAT_VERSION, now_ms, _to_list(command)], use_bin_type=True)


def decode_entry(data: bytes) -> tuple[int, TxCommand]:
    """Inverse of :func:`encode_entry`: ``(now_ms, command)``."""
    body = _unpack(data, "transaction log entry")
    if len(body) != 3:
        raise TxError("a transaction log entry must be [version, now_ms, command]")
    now_ms = body[1]
    if isinstance(now_ms, bool) or not isinstance(now_ms, int) or not 0 <= now_ms <= _UINT63:
        raise TxError(f"transaction log entry time must be an integer in 0..{_UINT63}")
    return now_ms, _from_list(body[2])
