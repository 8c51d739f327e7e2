"""Participants that take locks from the lock service while preparing: a deadlock aborts one transaction.

Two transactions lock two keys in opposite orders through the replicated lock
table (:class:`protocols.locks.LockStateMachine`), each lock owned by the
transaction (session id = transaction id) so the wait-for graph sees the
cycle. The victim's participant votes no with the lock service's reason; that
transaction aborts with a reason its client can read, its locks are released,
and the other transaction gets its lock and commits.
"""

from __future__ import annotations

from collections import deque

from protocols.locks import (
    Acquire,
    Command,
    Granted,
    LockResult,
    LockStateMachine,
    LockStatus,
    OpenSession,
    Release,
    WaitCancelled,
)
from protocols.twopc import (
    ApplyOutcome,
    BeginRequest,
    Decision,
    Effect,
    Outcome,
    Part,
    Participant,
    Persist,
    PrepareResource,
    Propose,
    Send,
    TxManager,
    TxMessage,
    TxTable,
    encode_entry,
)


class World:
    """One group (its log applied at once), two participants over one lock service, one client."""

    def __init__(self) -> None:
        self.now = 0
        self.table = TxTable()
        self.mgr = TxManager("n1", "group", self.table)
        self.mgr.became_leader(0)
        self.locks = LockStateMachine()
        self.parts = {name: Participant(name, "group") for name in ("px", "py")}
        self.waiting: dict[tuple[str, str], str] = {}  # (tx, lock) -> participant waiting for it
        self.held: dict[tuple[str, str], int] = {}  # (tx, participant) -> token
        self.keys: dict[tuple[str, str], str] = {}  # (tx, participant) -> lock name
        self.mail: deque[tuple[str, TxMessage]] = deque()
        self.client: dict[str, Decision] = {}

    def run_group(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Propose):
                self.now += 1
                result = self.table.apply_entry(encode_entry(self.now, e.command))
                self.run_group(self.mgr.applied(result, self.now))
            elif isinstance(e, Send):
                self.mail.append((e.to, e.message))

    def run_participant(self, name: str, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, PrepareResource):
                self.prepare(name, e.tx_id, e.payload.decode())
            elif isinstance(e, ApplyOutcome):
                self.finish(name, e.tx_id)
            elif isinstance(e, Send):
                self.mail.append((e.to, e.message))
            else:
                assert isinstance(e, Persist)

    def lock_command(self, command: Command) -> LockResult:
        result = self.locks.apply(command, self.now)
        for ev in result.events:  # a waiter granted later, a wait cancelled by a deadlock
            if isinstance(ev, Granted) and (ev.session_id, ev.lock_name) in self.waiting:
                name = self.waiting.pop((ev.session_id, ev.lock_name))
                self.held[(ev.session_id, name)] = ev.token
                answer = self.parts[name].resource_prepared(ev.session_id, True, "", self.now)
                self.run_participant(name, answer)
            elif isinstance(ev, WaitCancelled) and (ev.session_id, ev.lock_name) in self.waiting:
                name = self.waiting.pop((ev.session_id, ev.lock_name))
                self.run_participant(name, self.parts[name].resource_prepared(
                    ev.session_id, False, f"deadlock victim waiting for {ev.lock_name}", self.now))
        return result

    def prepare(self, name: str, tx_id: str, lock: str) -> None:
        if tx_id not in self.locks.sessions():
            self.locks.apply(OpenSession(tx_id, 60_000), self.now)
        self.keys[(tx_id, name)] = lock
        result = self.lock_command(Acquire(tx_id, lock))
        status = result.status
        if status is LockStatus.GRANTED:
            assert result.token is not None
            self.held[(tx_id, name)] = result.token
            self.run_participant(name, self.parts[name].resource_prepared(tx_id, True, "", self.now))
        elif status is LockStatus.QUEUED:
            self.waiting[(tx_id, lock)] = name
        else:
            reason = f"deadlock: {tx_id} would wait for {lock} in a cycle" if status is LockStatus.DEADLOCK \
                else f"lock {lock}: {status}"
            self.run_participant(name, self.parts[name].resource_prepared(tx_id, False, reason, self.now))

    def finish(self, name: str, tx_id: str) -> None:
        token = self.held.pop((tx_id, name), None)
        if token is not None:
            self.lock_command(Release(tx_id, self.keys[(tx_id, name)], token))

    def deliver(self, limit: int = 1_000) -> None:
        while self.mail and limit:
            limit -= 1
            to, message = self.mail.popleft()
            if to == "group":
                self.run_group(self.mgr.receive(message, self.now))
            elif to in self.parts:
                self.run_participant(to, self.parts[to].receive(message, self.now))
            elif isinstance(message, Decision):
                self.client[message.tx_id] = message


def test_a_deadlock_between_two_transactions_aborts_exactly_one_with_a_readable_reason() -> None:
    w = World()
    # tx1 locks a (at px) then b (at py); tx2 locks b (at px) then a (at py): opposite orders.
    for tx, first, second in (("tx1", "a", "b"), ("tx2", "b", "a")):
        w.run_group(w.mgr.receive(BeginRequest(tx, "client", 5_000,
                                               (Part("px", first.encode()), Part("py", second.encode()))), 0))
    # Deliver the prepares in the order that closes the cycle: both first locks, then both second ones.
    prepares = [m for m in w.mail if m[0] in ("px", "py")]
    w.mail = deque(sorted(prepares, key=lambda m: (m[0], m[1].tx_id)))
    w.deliver()
    outcomes = {tx: d.outcome for tx, d in w.client.items()}
    assert sorted(outcomes.values()) == [Outcome.ABORT, Outcome.COMMIT]
    [victim] = [tx for tx, o in outcomes.items() if o is Outcome.ABORT]
    assert "deadlock" in w.client[victim].reason and "voted no" in w.client[victim].reason
    assert victim == "tx2"  # the younger session is the victim
    assert w.table.get("tx1") is None and w.table.get("tx2") is None  # both ended: every participant acked
    assert w.locks.holder("a") is None and w.locks.holder("b") is None  # the winner released on commit
