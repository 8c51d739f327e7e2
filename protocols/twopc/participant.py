"""A participant of two-phase commit: prepare durably, vote, apply the group's decision, sans I/O.

The participant wraps one resource (a SQL database, an agent's camera
assignments) that the driver drives through :class:`PrepareResource` and
:class:`ApplyOutcome` effects. Its safety rules:

* a yes vote is sent only after the prepared record is durable (``Persist``
  comes first in the effect list, and the driver makes it durable before it
  carries out what follows);
* a participant that cannot prepare (the resource refuses, a lock is taken)
  votes no with the resource's reason, and a no vote is final: its record says
  ABORT, so a commit for it is refused;
* a decision is applied only as received from the group (``Decision`` or
  ``StatusReply``), never guessed: an in-doubt participant asks the group
  (:class:`StatusQuery`) after a restart and every ``query_ms`` until it knows;
* every input is idempotent by transaction id: duplicated, reordered and late
  messages get the same answer and change nothing; bad input gives an
  :class:`InputError` and a count in ``errors`` and changes nothing.

Driver contract::

    p = Participant(my_id, group_id, records_from_store)
    run(p.recover(now, prepared_in_resource))   # once after (re)start
    run(p.receive(message, now))                # Prepare / Decision / StatusReply addressed to me
    run(p.resource_prepared(tx_id, ok, reason, now))   # the answer to a PrepareResource
    run(p.tick(now))                            # every 100 ms or so

``run`` carries out the effects in order; ``Persist``/``Delete`` are durable
before anything after them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from protocols.twopc.effects import ApplyOutcome, Delete, Effect, InputError, Persist, PrepareResource, Send
from protocols.twopc.messages import (
    MAX_TIMEOUT_MS,
    Ack,
    Decision,
    Outcome,
    Prepare,
    StatusQuery,
    StatusReply,
    TxMessage,
    Vote,
)
from protocols.twopc.records import ParticipantRecord

__all__ = ["Participant", "ParticipantConfig"]

_ABORTED_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class ParticipantConfig:
    """Times in ms of the driver's clock."""

    query_ms: int = 500  # in doubt this long without word from the group: ask it
    # How long a decided record answers late messages. Longer than any transaction's timeout
    # (plus clock skew): a Prepare past its deadline is refused, so a Prepare that arrives
    # after its record is gone cannot prepare the same work twice.
    keep_decided_ms: int = 2 * MAX_TIMEOUT_MS

    def __post_init__(self) -> None:
        if self.query_ms < 1 or self.keep_decided_ms <= MAX_TIMEOUT_MS:
            raise ValueError(f"need query_ms >= 1 and keep_decided_ms > the longest ({MAX_TIMEOUT_MS})")


class Participant:
    """One resource's side of two-phase commit."""

    def __init__(self, participant_id: str, group: str, records: Iterable[ParticipantRecord] = (),
                 config: ParticipantConfig | None = None) -> None:
        self.id = participant_id
        self.group = group
        self.config = config or ParticipantConfig()
        self.errors: Counter[str] = Counter()
        self._records: dict[str, ParticipantRecord] = {r.tx_id: r for r in records}
        self._preparing: set[str] = set()  # PrepareResource out, no answer yet
        self._aborted: dict[str, None] = {}  # aborted with no record here, oldest first (bounded)
        self._heard: dict[str, int] = {}  # in-doubt tx -> when we last heard of it or asked

    # ---- reading -----------------------------------------------------------------------------

    def record(self, tx_id: str) -> ParticipantRecord | None:
        return self._records.get(tx_id)

    def in_doubt(self) -> tuple[str, ...]:
        """Transactions this participant voted yes on and does not know the outcome of."""
        return tuple(t for t, r in self._records.items() if r.in_doubt)

    # ---- inputs ------------------------------------------------------------------------------

    def recover(self, now_ms: int, prepared_in_resource: Iterable[str] = ()) -> list[Effect]:
        """After a (re)start: ask about what is in doubt; roll back prepared work that never got a vote.

        ``prepared_in_resource`` is what the resource itself holds prepared (e.g.
        ``pg_prepared_xacts``): work with no record here was prepared but never
        voted on (the crash came before the record), so it cannot have committed.
        """
        out: list[Effect] = []
        for tx_id in sorted(set(prepared_in_resource)):
            rec = self._records.get(tx_id)
            if rec is None:
                out.append(ApplyOutcome(tx_id, Outcome.ABORT))
            elif rec.outcome is not None:
                out.append(ApplyOutcome(tx_id, rec.outcome))  # the crash came between apply and persist
        for tx_id in self.in_doubt():
            self._heard[tx_id] = now_ms
            out.append(Send(self.group, StatusQuery(tx_id, self.id)))
        return out

    def receive(self, message: TxMessage, now_ms: int) -> list[Effect]:
        if isinstance(message, Prepare):
            return self._on_prepare(message, now_ms)
        if isinstance(message, Decision):
            return self._on_outcome(message.tx_id, message.outcome, now_ms)
        if isinstance(message, StatusReply):
            if message.outcome is None:
                self._heard[message.tx_id] = now_ms  # pending: the group will tell us
                return []
            return self._on_outcome(message.tx_id, message.outcome, now_ms)
        return [self._error("unexpected_message", message.tx_id, f"{message.TYPE} is not for a participant")]

    def resource_prepared(self, tx_id: str, ok: bool, reason: str, now_ms: int) -> list[Effect]:
        """The resource's answer to ``PrepareResource(tx_id)``: prepared durably, or refused (``reason``)."""
        if tx_id not in self._preparing:
            out: list[Effect] = [self._error("unexpected_prepare_answer", tx_id, "no prepare in progress")]
            if ok and tx_id not in self._records:
                out.append(ApplyOutcome(tx_id, Outcome.ABORT))  # prepared work nobody will vote on
            return out
        self._preparing.discard(tx_id)
        reason = reason[:256]
        if tx_id in self._aborted:  # the group aborted it meanwhile (and heard our ack)
            return [ApplyOutcome(tx_id, Outcome.ABORT)] if ok else []
        if not ok:
            rec = ParticipantRecord(tx_id, False, reason or "refused", Outcome.ABORT, now_ms, now_ms)
            return [*self._persist(rec), Send(self.group, Vote(tx_id, self.id, False, rec.reason))]
        rec = ParticipantRecord(tx_id, True, "", None, now_ms)
        self._heard[tx_id] = now_ms
        return self._vote_yes(rec)

    def tick(self, now_ms: int) -> list[Effect]:
        """Ask the group about every transaction in doubt for ``query_ms``; drop long-decided records."""
        out: list[Effect] = []
        for tx_id in self.in_doubt():
            heard = self._heard.get(tx_id)
            if heard is None or now_ms - heard >= self.config.query_ms:
                self._heard[tx_id] = now_ms
                out.append(Send(self.group, StatusQuery(tx_id, self.id)))
        horizon = now_ms - self.config.keep_decided_ms
        for tx_id, rec in list(self._records.items()):
            if rec.decided_ms is not None and rec.decided_ms < horizon:
                del self._records[tx_id]
                out.append(Delete(tx_id))
        return out

    # ---- the protocol ------------------------------------------------------------------------

    def _on_prepare(self, m: Prepare, now_ms: int) -> list[Effect]:
        if m.participant != self.id:
            return [self._error("not_addressed", m.tx_id, f"prepare for {m.participant}")]
        rec = self._records.get(m.tx_id)
        if rec is not None:  # a duplicate or a resend: the same answer
            if rec.outcome is not None and rec.yes:
                return [Send(self.group, Ack(m.tx_id, self.id, rec.outcome))]
            return [Send(self.group, Vote(m.tx_id, self.id, rec.yes, rec.reason))]
        if m.tx_id in self._preparing:
            return []
        if m.tx_id in self._aborted:
            return [Send(self.group, Vote(m.tx_id, self.id, False, "already aborted"))]
        if now_ms >= m.deadline_ms:
            self._remember_abort(m.tx_id)
            return [Send(self.group, Vote(m.tx_id, self.id, False, "deadline passed"))]
        self._preparing.add(m.tx_id)
        return [PrepareResource(m.tx_id, m.payload)]

    def _vote_yes(self, rec: ParticipantRecord) -> list[Effect]:
        """The prepared record is durable before the yes vote leaves."""
        return [*self._persist(rec), Send(self.group, Vote(rec.tx_id, self.id, True, ""))]

    def _on_outcome(self, tx_id: str, outcome: Outcome, now_ms: int) -> list[Effect]:
        rec = self._records.get(tx_id)
        ack = Send(self.group, Ack(tx_id, self.id, outcome))
        if rec is None:
            if outcome is Outcome.COMMIT:
                return [self._error("commit_never_prepared", tx_id, "commit of a tx not prepared here")]
            # No vote left here, so this participant is free to abort (presumed abort). Work still
            # being prepared is rolled back when the resource answers (or by recover() after a crash).
            self._remember_abort(tx_id)
            return [ack]
        if rec.outcome is not None:
            if rec.outcome is outcome:
                return [ack]
            code = "commit_after_no_vote" if not rec.yes else "conflicting_decision"
            return [self._error(code, tx_id, f"told {outcome} after {rec.outcome} here")]
        self._heard.pop(tx_id, None)
        decided = replace(rec, outcome=outcome, decided_ms=now_ms)
        # Apply first, then record: a crash between them repeats the (idempotent) apply after restart.
        return [ApplyOutcome(tx_id, outcome), *self._persist(decided), ack]

    def _remember_abort(self, tx_id: str) -> None:
        """Answer later prepares of ``tx_id`` with no. A hint only (presumed abort is the rule): bounded."""
        self._aborted[tx_id] = None
        if len(self._aborted) > _ABORTED_MEMORY:
            del self._aborted[next(iter(self._aborted))]

    def _persist(self, rec: ParticipantRecord) -> list[Effect]:
        self._records[rec.tx_id] = rec
        return [Persist(rec)]

    def _error(self, code: str, tx_id: str, detail: str) -> InputError:
        self.errors[code] += 1
        return InputError(code, tx_id, detail)
