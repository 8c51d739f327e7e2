"""The transaction table: the decision log of two-phase commit, replicated by the Raft group.

Every replica feeds committed entries, in log order, to :meth:`TxTable.apply`
with the time the leader stamped on the entry, and ends in the same state with
the same results. Nothing here reads a clock; time never moves backwards.

Rules (presumed abort):

* Only a transaction with a ``Begin`` record can commit. A transaction the log
  never began, asked about through ``Resolve`` (or decided about), gets an abort
  record there and then, so it can never begin or commit later.
* The first decision wins. A later ``Decide`` with the other outcome changes
  nothing and is answered with the recorded decision (``CONFLICT``).
* ``Decide(commit)`` is refused unless its ``yes_votes`` name every
  participant: the table itself will not log a commit with a missing vote.
* ``End`` forgets a decided transaction, only when ``acked`` names every
  participant, i.e. after each one applied the decision durably (a committed
  transaction is kept until then). Its id and outcome stay as a tombstone for
  ``tombstone_ms`` of log time, so late or duplicated messages are answered
  exactly and the id cannot be begun again meanwhile.
* A malformed entry is answered with ``MALFORMED`` and changes nothing (never
  an exception: one bad entry must not stop every replica).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import msgpack

from protocols.twopc.commands import (
    FORMAT_VERSION,
    Begin,
    Decide,
    End,
    Resolve,
    TxCommand,
    decode_entry,
)
from protocols.twopc.messages import Outcome, Part, TxState, check_id
from schemas.errors import CodecError, TxError, UnsupportedVersion

__all__ = ["DEFAULT_TOMBSTONE_MS", "TxRecord", "TxResult", "TxStateMachine", "TxStatus", "TxTable",
           "decode_result", "encode_result"]

DEFAULT_TOMBSTONE_MS = 3600 * 1000
_MAX_TIME = 2**63 - 1


class TxStatus(StrEnum):
    """What one applied command did."""

    OK = "ok"  # begun, decided, ended or resolved as asked
    NO_CHANGE = "no_change"  # a repeat of what is already recorded (a retried proposal)
    CONFLICT = "conflict"  # a decision that disagrees with the recorded one: ``state`` is the recorded one
    REFUSED = "refused"  # not allowed (``reason`` says why): commit without every yes vote, early End, ...
    MALFORMED = "malformed"  # the entry could not be decoded


@dataclass(frozen=True, slots=True)
class TxRecord:
    """One transaction the log has begun and not yet ended."""

    tx_id: str
    client: str
    parts: tuple[Part, ...]
    began_ms: int
    deadline_ms: int  # undecided at this (leader) time: the leader aborts it
    outcome: Outcome | None = None
    reason: str = ""
    decided_ms: int | None = None

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(p.participant for p in self.parts)

    @property
    def state(self) -> TxState:
        return TxState.PENDING if self.outcome is None else TxState(self.outcome.value)


@dataclass(frozen=True, slots=True)
class TxResult:
    """The answer to one applied entry; ``state`` is the transaction's state after it (None: malformed)."""

    status: TxStatus
    kind: str
    tx_id: str
    state: TxState | None
    reason: str
    now_ms: int

    @property
    def outcome(self) -> Outcome | None:
        return None if self.state in (None, TxState.PENDING) else Outcome(str(self.state))


@dataclass(frozen=True, slots=True)
class _Tombstone:
    outcome: Outcome
    reason: str
    ended_ms: int


class TxTable:
    """The replicated decision log. Feed it committed entries in log order."""

    def __init__(self, tombstone_ms: int = DEFAULT_TOMBSTONE_MS) -> None:
        if isinstance(tombstone_ms, bool) or not isinstance(tombstone_ms, int) or tombstone_ms < 0:
            raise TxError(f"tombstone_ms must be a non-negative integer, got {tombstone_ms!r}")
        self.tombstone_ms = tombstone_ms
        self._now = 0
        self._open: dict[str, TxRecord] = {}
        self._ended: dict[str, _Tombstone] = {}  # in ended order (time never goes back)

    # ---- applying ----------------------------------------------------------------------------

    def apply(self, command: TxCommand, now_ms: int) -> TxResult:
        """Apply one committed command at the leader-stamped time ``now_ms``."""
        if isinstance(now_ms, bool) or not isinstance(now_ms, int) or not 0 <= now_ms <= _MAX_TIME:
            raise TxError(f"now_ms must be an integer in 0..{_MAX_TIME}, got {now_ms!r}")
        self._now = max(self._now, now_ms)
        self._prune()
        if isinstance(command, Begin):
            return self._begin(command)
        if isinstance(command, Decide):
            return self._decide(command)
        if isinstance(command, End):
            return self._end(command)
        if isinstance(command, Resolve):
            return self._resolve(command)
        raise TxError(f"not a transaction table command: {command!r:.80}")

    def apply_entry(self, entry: bytes) -> TxResult:
        """Apply an encoded log entry (see :func:`protocols.twopc.commands.encode_entry`); never raises."""
        try:
            now_ms, command = decode_entry(entry)
        except CodecError as exc:
            return TxResult(TxStatus.MALFORMED, "", "", None, str(exc)[:256], self._now)
        return self.apply(command, now_ms)

    def _result(self, status: TxStatus, kind: str, tx_id: str, reason: str = "") -> TxResult:
        return TxResult(status, kind, tx_id, self.state(tx_id) or TxState.ABORT, reason, self._now)

    def _begin(self, cmd: Begin) -> TxResult:
        tx = self._open.get(cmd.tx_id)
        if tx is not None:
            same = (tx.client, tx.parts) == (cmd.client, cmd.parts)
            return self._result(TxStatus.NO_CHANGE if same else TxStatus.REFUSED, cmd.KIND, cmd.tx_id,
                                "" if same else "another transaction has this id")
        if cmd.tx_id in self._ended:
            return self._result(TxStatus.REFUSED, cmd.KIND, cmd.tx_id,
                                "this id was used by an ended transaction")
        self._open[cmd.tx_id] = TxRecord(cmd.tx_id, cmd.client, cmd.parts, self._now,
                                         min(self._now + cmd.timeout_ms, _MAX_TIME))
        return self._result(TxStatus.OK, cmd.KIND, cmd.tx_id)

    def _decide(self, cmd: Decide) -> TxResult:
        recorded = self.outcome(cmd.tx_id)
        if recorded is not None:
            status = TxStatus.NO_CHANGE if recorded is cmd.outcome else TxStatus.CONFLICT
            return self._result(status, cmd.KIND, cmd.tx_id, self.reason(cmd.tx_id))
        tx = self._open.get(cmd.tx_id)
        if tx is None:
            # Never begun: presumed abort, and recorded so that it stays aborted.
            self._bury(cmd.tx_id, Outcome.ABORT, "never begun")
            status = TxStatus.REFUSED if cmd.outcome is Outcome.COMMIT else TxStatus.OK
            return self._result(status, cmd.KIND, cmd.tx_id, "never begun")
        if cmd.outcome is Outcome.COMMIT:
            missing = self._missing_votes(tx, cmd)
            if missing:
                return self._result(TxStatus.REFUSED, cmd.KIND, cmd.tx_id,
                                    f"commit without a yes vote from {', '.join(missing)[:200]}")
        self._open[cmd.tx_id] = replace(tx, outcome=cmd.outcome, reason=cmd.reason, decided_ms=self._now)
        return self._result(TxStatus.OK, cmd.KIND, cmd.tx_id, cmd.reason)

    def _missing_votes(self, tx: TxRecord, cmd: Decide) -> list[str]:
        """Participants a commit lacks a yes vote from (it is refused unless there are none)."""
        return [p for p in tx.participants if p not in cmd.yes_votes]

    def _end(self, cmd: End) -> TxResult:
        if cmd.tx_id in self._ended:
            return self._result(TxStatus.NO_CHANGE, cmd.KIND, cmd.tx_id)
        tx = self._open.get(cmd.tx_id)
        if tx is None:
            return TxResult(TxStatus.REFUSED, cmd.KIND, cmd.tx_id, TxState.ABORT, "no such transaction",
                            self._now)
        if tx.outcome is None:
            return self._result(TxStatus.REFUSED, cmd.KIND, cmd.tx_id, "not decided yet")
        missing = [p for p in tx.participants if p not in cmd.acked]
        if missing:
            return self._result(TxStatus.REFUSED, cmd.KIND, cmd.tx_id,
                                f"not acknowledged by {', '.join(missing)[:200]}")
        del self._open[cmd.tx_id]
        self._bury(cmd.tx_id, tx.outcome, tx.reason)
        return self._result(TxStatus.OK, cmd.KIND, cmd.tx_id, tx.reason)

    def _resolve(self, cmd: Resolve) -> TxResult:
        if self.state(cmd.tx_id) is None:
            self._bury(cmd.tx_id, Outcome.ABORT, "never begun")
        return self._result(TxStatus.OK, cmd.KIND, cmd.tx_id, self.reason(cmd.tx_id))

    def _bury(self, tx_id: str, outcome: Outcome, reason: str) -> None:
        self._ended[tx_id] = _Tombstone(outcome, reason, self._now)

    def _prune(self) -> None:
        horizon = self._now - self.tombstone_ms
        while self._ended:
            tx_id, stone = next(iter(self._ended.items()))
            if stone.ended_ms > horizon:
                break
            del self._ended[tx_id]

    # ---- reading -----------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The highest time applied so far."""
        return self._now

    def get(self, tx_id: str) -> TxRecord | None:
        """The open (begun, not ended) transaction ``tx_id``, or None."""
        return self._open.get(tx_id)

    def open_transactions(self) -> Iterator[TxRecord]:
        """Every begun, not ended transaction, oldest first."""
        return iter(tuple(self._open.values()))

    def state(self, tx_id: str) -> TxState | None:
        """PENDING, COMMIT or ABORT as the log says; None if the log has no record (presumed abort)."""
        tx = self._open.get(tx_id)
        if tx is not None:
            return tx.state
        stone = self._ended.get(tx_id)
        return None if stone is None else TxState(stone.outcome.value)

    def outcome(self, tx_id: str) -> Outcome | None:
        """The logged decision, or None while undecided or unknown."""
        state = self.state(tx_id)
        return None if state in (None, TxState.PENDING) else Outcome(str(state))

    def reason(self, tx_id: str) -> str:
        tx = self._open.get(tx_id)
        if tx is not None:
            return tx.reason
        stone = self._ended.get(tx_id)
        return "" if stone is None else stone.reason

    def is_ended(self, tx_id: str) -> bool:
        return tx_id in self._ended

    # ---- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as deterministic msgpack: equal states give equal bytes.

        ``[1, now_ms, open, ended]`` with ``open = [[tx_id, client, parts, began_ms,
        deadline_ms, outcome|nil, reason, decided_ms|nil], ...]`` in begin order and
        ``ended = [[tx_id, outcome, reason, ended_ms], ...]`` in end order.
        """
        open_ = [[t.tx_id, t.client, [[p.participant, p.payload] for p in t.parts], t.began_ms,
                  t.deadline_ms, None if t.outcome is None else t.outcome.value, t.reason, t.decided_ms]
                 for t in self._open.values()]
        ended = [[tx_id, s.outcome.value, s.reason, s.ended_ms] for tx_id, s in self._ended.items()]
        return msgpack.packb([FORMAT_VERSION, self._now, open_, ended], use_bin_type=True)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; a malformed one raises TxError and changes nothing."""
        try:
            state = _decode_snapshot(data)
        except UnsupportedVersion:
            raise
        except (TxError, ValueError, TypeError, KeyError) as exc:
            raise TxError(f"invalid transaction table snapshot: {exc}") from exc
        self._now, self._open, self._ended = state


def _time(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIME:
        raise TxError(f"bad time {value!r:.40}")
    return value


def _decode_snapshot(data: bytes) -> tuple[int, dict[str, TxRecord], dict[str, _Tombstone]]:
    body: Any = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    if not isinstance(body, list) or len(body) != 4:
        raise TxError("a snapshot must be [version, now_ms, open, ended]")
    if body[0] != FORMAT_VERSION:
        raise UnsupportedVersion(f"transaction table snapshot format {body[0]!r:.20} is not supported")
    now = _time(body[1])
    open_: dict[str, TxRecord] = {}
    for tx_id, client, parts, began, deadline, outcome, reason, decided in body[2]:
        check_id("tx_id", tx_id)
        if tx_id in open_:
            raise TxError(f"transaction {tx_id!r} repeated")
        open_[tx_id] = TxRecord(
            tx_id, check_id("client", client), tuple(Part(p, payload) for p, payload in parts),
            _time(began), _time(deadline), None if outcome is None else Outcome(outcome), str(reason),
            None if decided is None else _time(decided))
    ended: dict[str, _Tombstone] = {}
    for tx_id, outcome, reason, ended_ms in body[3]:
        check_id("tx_id", tx_id)
        if tx_id in open_ or tx_id in ended:
            raise TxError(f"transaction {tx_id!r} both open and ended, or ended twice")
        ended[tx_id] = _Tombstone(Outcome(outcome), str(reason), _time(ended_ms))
    return now, open_, ended


def encode_result(result: TxResult) -> bytes:
    """The result as the Raft reply to whoever proposed the entry."""
    state = None if result.state is None else result.state.value
    return msgpack.packb([FORMAT_VERSION, result.status.value, result.kind, result.tx_id, state,
                          result.reason, result.now_ms], use_bin_type=True)


def decode_result(data: bytes) -> TxResult:
    try:
        version, status, kind, tx_id, state, reason, now_ms = msgpack.unpackb(data, raw=False)
        if version != FORMAT_VERSION:
            raise UnsupportedVersion(f"transaction result version {version!r:.20} is not supported")
        return TxResult(TxStatus(status), str(kind), str(tx_id), None if state is None else TxState(state),
                        str(reason), _time(now_ms))
    except CodecError:
        raise
    except Exception as exc:  # msgpack and the enums raise several unrelated types
        raise TxError(f"malformed transaction result: {exc}") from exc


class TxStateMachine:
    """A :class:`TxTable` as a Raft state machine (``apply(bytes) -> bytes``) for a group of its own.

    Each log entry is :func:`~protocols.twopc.commands.encode_entry`'s; the
    reply is :func:`encode_result`'s. The results wait in :meth:`drain_results`
    for the node's :class:`~protocols.twopc.manager.TxManager`. (A group that
    also runs the lock table wraps :meth:`TxTable.apply_entry` in its own
    state machine the same way.)
    """

    def __init__(self, table: TxTable | None = None) -> None:
        self.table = table if table is not None else TxTable()
        self._results: list[TxResult] = []

    def apply(self, command: bytes) -> bytes:
        result = self.table.apply_entry(command)
        self._results.append(result)
        return encode_result(result)

    def drain_results(self) -> list[TxResult]:
        """Results of the entries applied since the last call, in log order."""
        results, self._results = self._results, []
        return results

    def snapshot(self) -> bytes:
        return self.table.snapshot()

    def restore(self, data: bytes) -> None:
        self.table.restore(data)
