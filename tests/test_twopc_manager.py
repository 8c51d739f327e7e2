"""The transaction manager: decisions only from the applied log, a new leader finishes what is open."""

from __future__ import annotations

from protocols.twopc import (
    Ack,
    Begin,
    BeginRequest,
    Decide,
    Decision,
    Effect,
    End,
    InputError,
    ManagerConfig,
    Outcome,
    Part,
    Prepare,
    Propose,
    Resolve,
    Send,
    StatusQuery,
    StatusReply,
    TxCommand,
    TxDecided,
    TxEnded,
    TxManager,
    TxState,
    TxTable,
    Vote,
    encode_entry,
)

PARTS = (Part("a", b"x"), Part("b", b"y"))
REQUEST = BeginRequest("t1", "client", 500, PARTS)


class Group:
    """One manager over its table; ``commit`` plays the Raft log: apply a proposal, tell the manager."""

    def __init__(self) -> None:
        self.table = TxTable()
        self.mgr = TxManager("n1", "g", self.table, ManagerConfig(resend_ms=100, propose_retry_ms=200))
        self.mgr.became_leader(0)

    def commit(self, command: TxCommand, now: int) -> list[Effect]:
        return self.mgr.applied(self.table.apply_entry(encode_entry(now, command)), now)


def proposals(effects: list[Effect]) -> list[TxCommand]:
    return [e.command for e in effects if isinstance(e, Propose)]


def sends(effects: list[Effect]) -> list[tuple[str, object]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


def test_a_transaction_from_request_to_end() -> None:
    g = Group()
    [begin] = proposals(g.mgr.receive(REQUEST, 1))
    assert begin == Begin("t1", "client", 500, PARTS)
    out = g.commit(begin, 2)
    assert sends(out) == [("a", Prepare("t1", "a", ("a", "b"), b"x", 502)),
                          ("b", Prepare("t1", "b", ("a", "b"), b"y", 502))]
    assert g.mgr.receive(Vote("t1", "a", True), 3) == []
    [decide] = proposals(g.mgr.receive(Vote("t1", "b", True), 4))
    assert decide == Decide("t1", Outcome.COMMIT, "", ("a", "b"))
    out = g.commit(decide, 5)
    assert TxDecided("t1", Outcome.COMMIT, "") in out
    assert sends(out) == [("a", Decision("t1", Outcome.COMMIT)), ("b", Decision("t1", Outcome.COMMIT)),
                          ("client", Decision("t1", Outcome.COMMIT))]
    assert g.mgr.receive(Ack("t1", "a", Outcome.COMMIT), 6) == []
    [end] = proposals(g.mgr.receive(Ack("t1", "b", Outcome.COMMIT), 7))
    assert end == End("t1", ("a", "b"))
    assert TxEnded("t1", Outcome.COMMIT) in g.commit(end, 8)
    assert g.table.get("t1") is None


def test_the_decision_is_never_sent_before_its_entry_is_applied() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 1)
    g.mgr.receive(Vote("t1", "a", True), 2)
    out = g.mgr.receive(Vote("t1", "b", True), 3)
    assert proposals(out) and not [m for _, m in sends(out) if isinstance(m, Decision)]
    assert not [m for _, m in sends(g.mgr.tick(50)) if isinstance(m, Decision)]


def test_a_no_vote_aborts_with_its_reason() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 1)
    [decide] = proposals(g.mgr.receive(Vote("t1", "b", False, "camera busy"), 2))
    assert decide == Decide("t1", Outcome.ABORT, "b voted no: camera busy")


def test_an_undecided_transaction_aborts_at_its_deadline_and_is_prepared_again_before() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 0)
    g.mgr.receive(Vote("t1", "a", True), 10)
    assert sends(g.mgr.tick(50)) == []  # resend_ms not reached
    assert sends(g.mgr.tick(100)) == [("b", Prepare("t1", "b", ("a", "b"), b"y", 500))]
    assert proposals(g.mgr.tick(500)) == [Decide("t1", Outcome.ABORT, "timeout")]
    assert proposals(g.mgr.tick(600)) == []  # proposed already; retried after propose_retry_ms
    assert proposals(g.mgr.tick(700)) == [Decide("t1", Outcome.ABORT, "timeout")]


def test_a_new_leader_finishes_what_its_predecessor_started() -> None:
    old = Group()
    old.commit(Begin("t1", "client", 500, PARTS), 0)
    old.commit(Begin("t2", "client", 500, PARTS), 0)
    old.commit(Decide("t2", Outcome.COMMIT, "", ("a", "b")), 1)
    # Another node, whose replica holds the same log, takes over.
    new = TxManager("n2", "g", old.table)
    out = new.became_leader(10)
    assert ("a", Prepare("t1", "a", ("a", "b"), b"x", 500)) in sends(out)
    assert ("b", Decision("t2", Outcome.COMMIT)) in sends(out)
    # Acks are soft state: gathered again, then the transaction ends.
    new.receive(Ack("t2", "a", Outcome.COMMIT), 11)
    assert proposals(new.receive(Ack("t2", "b", Outcome.COMMIT), 12)) == [End("t2", ("a", "b"))]


def test_followers_do_nothing() -> None:
    g = Group()
    g.mgr.lost_leadership()
    assert g.mgr.receive(REQUEST, 1) == [] and g.mgr.tick(1_000) == []
    assert g.commit(Begin("t1", "client", 500, PARTS), 2) == []


def test_status_queries_are_answered_from_the_log_and_absence_only_through_it() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 0)
    assert sends(g.mgr.receive(StatusQuery("t1", "a"), 1)) == [("a", StatusReply("t1", TxState.PENDING))]
    out = g.mgr.receive(StatusQuery("ghost", "a"), 2)
    assert proposals(out) == [Resolve("ghost")] and sends(out) == []
    out = g.commit(Resolve("ghost"), 3)
    assert sends(out) == [("a", StatusReply("ghost", TxState.ABORT, "never begun"))]


def test_a_retried_request_for_an_ended_transaction_gets_its_outcome() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 0)
    g.commit(Decide("t1", Outcome.ABORT, "timeout"), 1)
    g.commit(End("t1", ("a", "b")), 2)
    assert sends(g.mgr.receive(REQUEST, 3)) == [("client", Decision("t1", Outcome.ABORT, "timeout"))]


def test_bad_input_is_counted_and_changes_nothing() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 0)
    before = g.table.snapshot()
    cases: list[tuple[object, str]] = [
        (Vote("t1", "mallory", True), "not_participant"),
        (Ack("t1", "mallory", Outcome.COMMIT), "not_participant"),
        (Vote("t9", "a", True), "unknown_tx"),
        (Ack("t9", "a", Outcome.ABORT), "unknown_tx"),
        (Decision("t1", Outcome.COMMIT), "unexpected_message"),
        (BeginRequest("t1", "client", 500, (Part("z"),)), "id_reused"),
    ]
    for message, code in cases:
        out = g.mgr.receive(message, 1)  # type: ignore[arg-type]
        assert [e.code for e in out if isinstance(e, InputError)] == [code], message
        assert proposals(out) == []
    assert g.table.snapshot() == before
    assert g.mgr.errors["not_participant"] == 2


def test_a_participant_that_votes_both_ways_keeps_its_first_vote() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 0)
    g.mgr.receive(Vote("t1", "a", False, "busy"), 1)
    out = g.mgr.receive(Vote("t1", "a", True), 2)
    assert [e.code for e in out if isinstance(e, InputError)] == ["vote_changed"]
    commit = Decide("t1", Outcome.COMMIT, "", ("a", "b"))
    assert commit not in proposals(g.mgr.receive(Vote("t1", "b", True), 3))


def test_an_ack_that_disagrees_with_the_log_is_reported() -> None:
    g = Group()
    g.commit(Begin("t1", "client", 500, PARTS), 0)
    g.commit(Decide("t1", Outcome.ABORT, "timeout"), 1)
    out = g.mgr.receive(Ack("t1", "a", Outcome.COMMIT), 2)
    assert [e.code for e in out if isinstance(e, InputError)] == ["ack_disagrees"]
