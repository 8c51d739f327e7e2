"""The transaction manager: the leader-side logic of two-phase commit, sans I/O.

Every node of the Raft group runs a :class:`TxManager` over its own replica of
the :class:`~protocols.twopc.table.TxTable`; only the leader's acts. Because
the table is the durable state and the manager keeps nothing but soft state
(votes and acknowledgements heard so far, when it last sent what), any node
that becomes leader finishes every transaction the log holds: it prepares
again the undecided ones (participants answer idempotently) and aborts them at
their deadline, and it tells the decided ones' outcome to every participant
that has not acknowledged it. A prepared participant is therefore blocked only
while the group has no majority, never on one coordinator.

The rules that make it safe, in code below:

* a decision is sent only as read from the applied table, i.e. after its
  ``Decide`` entry is committed in the log (:meth:`TxManager._tell_decision`);
* a commit is proposed only with a yes vote from every participant, and the
  table refuses it otherwise;
* absence is never read as abort except through the log (``Resolve``), so a
  new leader whose replica lags cannot abort a transaction that may commit.

Driver contract (the MQTT driver and the simulator both do this)::

    mgr = TxManager(node_id, group_id, table)
    on becoming leader:   run(mgr.became_leader(now))
    on losing it:         mgr.lost_leadership()
    each tx entry applied on this node (leader or not): run(mgr.applied(result, now))
    each tx message on the group's topics:             run(mgr.receive(message, now))
    every tick (e.g. 10-50 ms):                        run(mgr.tick(now))

where ``run`` stamps each :class:`Propose` with ``now`` and proposes it to the
Raft node, publishes each :class:`Send`, and logs/counts the reports.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from protocols.twopc.commands import Begin, Decide, End, Resolve, TxCommand
from protocols.twopc.effects import Effect, InputError, Propose, Send, TxDecided, TxEnded
from protocols.twopc.messages import (
    Ack,
    BeginRequest,
    Decision,
    Outcome,
    Prepare,
    StatusQuery,
    StatusReply,
    TxMessage,
    Vote,
)
from protocols.twopc.table import TxRecord, TxResult, TxStatus, TxTable

__all__ = ["ManagerConfig", "TxManager"]


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """Times in ms of the driver's clock."""

    resend_ms: int = 200  # prepare / decision again to whoever has not answered
    propose_retry_ms: int = 400  # propose again a command not seen applied by then

    def __post_init__(self) -> None:
        if self.resend_ms < 1 or self.propose_retry_ms < 1:
            raise ValueError("resend_ms and propose_retry_ms must be >= 1")


@dataclass(slots=True)
class _Soft:
    """What the leader has heard about one transaction since it became leader (lost with it)."""

    votes: dict[str, Vote] = field(default_factory=dict)
    acks: set[str] = field(default_factory=set)
    prepared_at: int | None = None
    told_at: int | None = None


class TxManager:
    """Leader-side two-phase commit over a replicated :class:`TxTable`."""

    def __init__(self, node_id: str, group: str, table: TxTable, config: ManagerConfig | None = None) -> None:
        self.node_id = node_id
        self.group = group
        self.table = table
        self.config = config or ManagerConfig()
        self.errors: Counter[str] = Counter()
        self._leader = False
        self._soft: dict[str, _Soft] = {}
        self._proposed: dict[tuple[str, str], int] = {}  # (kind, tx_id) -> when
        self._waiting: dict[str, set[str]] = {}  # tx_id -> askers waiting for a Resolve

    @property
    def is_leader(self) -> bool:
        return self._leader

    # ---- inputs ------------------------------------------------------------------------------

    def became_leader(self, now_ms: int) -> list[Effect]:
        """Take over: drive every transaction the table holds to its end."""
        self._leader = True
        self._soft, self._proposed, self._waiting = {}, {}, {}
        return self.tick(now_ms)

    def lost_leadership(self) -> None:
        self._leader = False
        self._soft, self._proposed, self._waiting = {}, {}, {}

    def applied(self, result: TxResult, now_ms: int) -> list[Effect]:
        """A transaction entry was applied on this node (its ``TxTable.apply`` result)."""
        if not self._leader or result.status is TxStatus.MALFORMED:
            return []
        self._proposed.pop((result.kind, result.tx_id), None)
        out: list[Effect] = []
        tx = self.table.get(result.tx_id)
        if result.kind == "begin":
            if tx is not None and tx.outcome is None:
                out += self._prepare(tx, now_ms, force=True)
            elif result.status is TxStatus.REFUSED and tx is not None:
                out.append(self._error("id_reused", result.tx_id, result.reason))
            # REFUSED with no open record: a late copy of a Begin whose transaction already ended;
            # the client hears the outcome when it asks again (see _on_begin).
        elif result.kind == "decide":
            if result.status is TxStatus.OK and result.outcome is not None:
                out.append(TxDecided(result.tx_id, result.outcome, result.reason))
            if tx is not None and tx.outcome is not None:
                out += self._tell_decision(tx, now_ms, force=True)
                out.append(Send(tx.client, Decision(tx.tx_id, tx.outcome, tx.reason)))
            out += self._answer_waiters(result.tx_id)
        elif result.kind == "end":
            if result.status is TxStatus.OK and result.outcome is not None:
                out.append(TxEnded(result.tx_id, result.outcome))
            self._soft.pop(result.tx_id, None)
            out += self._answer_waiters(result.tx_id)
        elif result.kind == "resolve":
            out += self._answer_waiters(result.tx_id)
        return out

    def receive(self, message: TxMessage, now_ms: int) -> list[Effect]:
        """A message on the group's transaction topics (followers ignore them all)."""
        if not self._leader:
            return []
        if isinstance(message, BeginRequest):
            return self._on_begin(message, now_ms)
        if isinstance(message, Vote):
            return self._on_vote(message, now_ms)
        if isinstance(message, Ack):
            return self._on_ack(message, now_ms)
        if isinstance(message, StatusQuery):
            return self._on_query(message, now_ms)
        return [self._error("unexpected_message", message.tx_id, f"{message.TYPE} is not for the group")]

    def tick(self, now_ms: int) -> list[Effect]:
        """Timeouts and resends: abort what passed its deadline, re-ask whoever has not answered."""
        if not self._leader:
            return []
        out: list[Effect] = []
        for tx in self.table.open_transactions():
            if tx.outcome is None:
                if now_ms >= tx.deadline_ms:
                    out += self._propose(Decide(tx.tx_id, Outcome.ABORT, "timeout"), now_ms)
                else:
                    out += self._prepare(tx, now_ms)
                    out += self._maybe_decide(tx, now_ms)
            else:
                out += self._tell_decision(tx, now_ms)
                out += self._maybe_end(tx, now_ms)
        for tx_id in list(self._waiting):
            if self.table.state(tx_id) is None:
                out += self._propose(Resolve(tx_id), now_ms)
        for tx_id in [t for t in self._soft if self.table.get(t) is None]:
            del self._soft[tx_id]
        return out

    # ---- messages ----------------------------------------------------------------------------

    def _on_begin(self, m: BeginRequest, now_ms: int) -> list[Effect]:
        tx = self.table.get(m.tx_id)
        if tx is not None:
            if tx.parts != m.parts or tx.client != m.client:
                return [self._error("id_reused", m.tx_id, "another transaction has this id")]
            if tx.outcome is not None:
                return [Send(m.client, Decision(tx.tx_id, tx.outcome, tx.reason))]
            return []  # in progress: the client hears the decision
        outcome = self.table.outcome(m.tx_id)
        if outcome is not None:  # ended (or resolved as never begun): the id is spent
            return [Send(m.client, Decision(m.tx_id, outcome, self.table.reason(m.tx_id)))]
        return self._propose(Begin(m.tx_id, m.client, m.timeout_ms, m.parts), now_ms)

    def _on_vote(self, m: Vote, now_ms: int) -> list[Effect]:
        tx = self.table.get(m.tx_id)
        if tx is None:
            if self.table.state(m.tx_id) is not None:
                return []  # a late vote on an ended transaction
            return [self._error("unknown_tx", m.tx_id, f"vote from {m.participant}")]
        if m.participant not in tx.participants:
            return [self._error("not_participant", m.tx_id, f"vote from {m.participant}")]
        if tx.outcome is not None:
            return self._tell_decision(tx, now_ms, only=m.participant)
        soft = self._soft.setdefault(tx.tx_id, _Soft())
        first = soft.votes.setdefault(m.participant, m)
        if first.yes != m.yes:
            return [self._error("vote_changed", m.tx_id, f"{m.participant} voted both ways; first wins")]
        return self._maybe_decide(tx, now_ms)

    def _on_ack(self, m: Ack, now_ms: int) -> list[Effect]:
        tx = self.table.get(m.tx_id)
        if tx is None:
            if self.table.state(m.tx_id) is not None:
                return []  # a late or duplicated ack on an ended transaction
            return [self._error("unknown_tx", m.tx_id, f"ack from {m.participant}")]
        if m.participant not in tx.participants:
            return [self._error("not_participant", m.tx_id, f"ack from {m.participant}")]
        if tx.outcome is None:
            # Only an abort can be acknowledged early: a participant that refused or gave up.
            if m.outcome is Outcome.ABORT:
                return self._on_vote(Vote(m.tx_id, m.participant, False, "aborted"), now_ms)
            # A commit this replica has not applied yet (it lags the leader that decided): resent later.
            return []
        if m.outcome is not tx.outcome:
            return [self._error("ack_disagrees", m.tx_id, f"{m.participant} applied {m.outcome}")]
        self._soft.setdefault(tx.tx_id, _Soft()).acks.add(m.participant)
        return self._maybe_end(tx, now_ms)

    def _on_query(self, m: StatusQuery, now_ms: int) -> list[Effect]:
        state = self.table.state(m.tx_id)
        if state is not None:
            return [Send(m.asker, StatusReply(m.tx_id, state, self.table.reason(m.tx_id)))]
        # Absence is read through the log: this replica may lag behind a Begin.
        self._waiting.setdefault(m.tx_id, set()).add(m.asker)
        return self._propose(Resolve(m.tx_id), now_ms)

    # ---- driving one transaction -------------------------------------------------------------

    def _prepare(self, tx: TxRecord, now_ms: int, force: bool = False) -> list[Effect]:
        soft = self._soft.setdefault(tx.tx_id, _Soft())
        if not force and soft.prepared_at is not None and now_ms - soft.prepared_at < self.config.resend_ms:
            return []
        soft.prepared_at = now_ms
        return [
            Send(p.participant, Prepare(tx.tx_id, p.participant, tx.participants, p.payload, tx.deadline_ms))
            for p in tx.parts if p.participant not in soft.votes
        ]

    def _maybe_decide(self, tx: TxRecord, now_ms: int) -> list[Effect]:
        votes = self._soft.setdefault(tx.tx_id, _Soft()).votes
        no = [v for v in votes.values() if not v.yes]
        if no:
            reason = f"{no[0].participant} voted no: {no[0].reason}"[:256]
            return self._propose(Decide(tx.tx_id, Outcome.ABORT, reason), now_ms)
        yes = tuple(p for p in tx.participants if p in votes)
        if self._may_commit(tx, yes):
            return self._propose(Decide(tx.tx_id, Outcome.COMMIT, "", yes), now_ms)
        return []

    def _may_commit(self, tx: TxRecord, yes_votes: tuple[str, ...]) -> bool:
        """Commit needs a yes vote from every participant."""
        return len(yes_votes) == len(tx.participants)

    def _tell_decision(self, tx: TxRecord, now_ms: int, force: bool = False,
                       only: str | None = None) -> list[Effect]:
        """Send the decision as the applied table holds it: so never before its entry is committed."""
        outcome = self.table.outcome(tx.tx_id)
        if outcome is None:
            return []
        soft = self._soft.setdefault(tx.tx_id, _Soft())
        if only is None:
            if not force and soft.told_at is not None and now_ms - soft.told_at < self.config.resend_ms:
                return []
            soft.told_at = now_ms
        decision = Decision(tx.tx_id, outcome, tx.reason)
        return [Send(p, decision) for p in tx.participants
                if p not in soft.acks and (only is None or p == only)]

    def _maybe_end(self, tx: TxRecord, now_ms: int) -> list[Effect]:
        acks = self._soft.setdefault(tx.tx_id, _Soft()).acks
        if all(p in acks for p in tx.participants):
            return self._propose(End(tx.tx_id, tx.participants), now_ms)
        return []

    def _answer_waiters(self, tx_id: str) -> list[Effect]:
        state = self.table.state(tx_id)
        if state is None or tx_id not in self._waiting:
            return []
        askers = sorted(self._waiting.pop(tx_id))
        return [Send(a, StatusReply(tx_id, state, self.table.reason(tx_id))) for a in askers]

    def _propose(self, command: TxCommand, now_ms: int) -> list[Effect]:
        key = (command.KIND, command.tx_id)
        last = self._proposed.get(key)
        if last is not None and now_ms - last < self.config.propose_retry_ms:
            return []
        self._proposed[key] = now_ms
        return [Propose(command)]

    def _error(self, code: str, tx_id: str, detail: str) -> InputError:
        self.errors[code] += 1
        return InputError(code, tx_id, detail)

