"""The participant: durable prepare before a yes vote, decisions only from the group, idempotent."""

from __future__ import annotations

import pytest

from protocols.twopc import (
    Ack,
    ApplyOutcome,
    Decision,
    Delete,
    Effect,
    InputError,
    Outcome,
    Participant,
    ParticipantConfig,
    ParticipantRecord,
    Persist,
    Prepare,
    PrepareResource,
    Send,
    StatusQuery,
    StatusReply,
    TxState,
    Vote,
)
from protocols.twopc.messages import MAX_TIMEOUT_MS

PREPARE = Prepare("t1", "a", ("a", "b"), b"cam7", deadline_ms=1_000)


def sent(effects: list[Effect]) -> list[object]:
    return [e.message for e in effects if isinstance(e, Send)]


def prepared() -> Participant:
    p = Participant("a", "g")
    assert p.receive(PREPARE, 10) == [PrepareResource("t1", b"cam7")]
    out = p.resource_prepared("t1", True, "", 20)
    assert out == [Persist(ParticipantRecord("t1", True, "", None, 20)), Send("g", Vote("t1", "a", True))]
    return p


def test_the_prepared_record_is_persisted_before_the_yes_vote() -> None:
    prepared()  # the order is asserted inside


def test_a_refusing_resource_gives_a_recorded_no_vote_with_its_reason() -> None:
    p = Participant("a", "g")
    p.receive(PREPARE, 10)
    out = p.resource_prepared("t1", False, "lock cam7 held by t0", 20)
    assert isinstance(out[0], Persist) and out[0].record.outcome is Outcome.ABORT
    assert sent(out) == [Vote("t1", "a", False, "lock cam7 held by t0")]
    # A commit for it is refused and changes nothing; an abort is acknowledged.
    assert p.receive(Decision("t1", Outcome.COMMIT), 30) == [
        InputError("commit_after_no_vote", "t1", "told commit after abort here")]
    assert sent(p.receive(Decision("t1", Outcome.ABORT), 31)) == [Ack("t1", "a", Outcome.ABORT)]
    assert p.errors["commit_after_no_vote"] == 1


def test_a_decision_is_applied_then_recorded_then_acknowledged_once() -> None:
    p = prepared()
    out = p.receive(Decision("t1", Outcome.COMMIT), 30)
    assert out == [ApplyOutcome("t1", Outcome.COMMIT),
                   Persist(ParticipantRecord("t1", True, "", Outcome.COMMIT, 20, 30)),
                   Send("g", Ack("t1", "a", Outcome.COMMIT))]
    # Duplicates and resends: the same ack, nothing applied again.
    assert p.receive(Decision("t1", Outcome.COMMIT), 40) == [Send("g", Ack("t1", "a", Outcome.COMMIT))]
    assert p.receive(PREPARE, 41) == [Send("g", Ack("t1", "a", Outcome.COMMIT))]
    # A conflicting late decision never changes the outcome.
    out = p.receive(Decision("t1", Outcome.ABORT), 42)
    assert [type(e) for e in out] == [InputError] and p.record("t1").outcome is Outcome.COMMIT  # type: ignore[union-attr]


def test_duplicated_prepares_get_the_same_vote_and_prepare_once() -> None:
    p = Participant("a", "g")
    assert len(p.receive(PREPARE, 10)) == 1
    assert p.receive(PREPARE, 11) == []  # the resource is still working on it
    p.resource_prepared("t1", True, "", 20)
    assert p.receive(PREPARE, 30) == [Send("g", Vote("t1", "a", True))]


def test_an_in_doubt_participant_asks_the_group_after_a_restart_and_obeys_the_reply() -> None:
    p = prepared()
    again = Participant("a", "g", [p.record("t1")])  # type: ignore[list-item]
    assert again.in_doubt() == ("t1",)
    assert sent(again.recover(100, prepared_in_resource=["t1"])) == [StatusQuery("t1", "a")]
    assert again.receive(StatusReply("t1", TxState.PENDING), 110) == []
    assert again.tick(200) == []  # heard from the group recently
    assert sent(again.tick(111 + 500)) == [StatusQuery("t1", "a")]
    out = again.receive(StatusReply("t1", TxState.ABORT, "timeout"), 700)
    assert out[0] == ApplyOutcome("t1", Outcome.ABORT) and again.in_doubt() == ()


def test_prepared_work_without_a_record_is_rolled_back_on_recovery() -> None:
    """The crash came after the resource prepared but before the record: no vote left, so abort."""
    p = Participant("a", "g")
    assert p.recover(5, prepared_in_resource=["t9"]) == [ApplyOutcome("t9", Outcome.ABORT)]


def test_an_abort_while_preparing_rolls_back_when_the_resource_answers() -> None:
    p = Participant("a", "g")
    p.receive(PREPARE, 10)
    # No vote left, so it may abort at once; the work being prepared is rolled back when it is ready.
    assert p.receive(Decision("t1", Outcome.ABORT), 11) == [Send("g", Ack("t1", "a", Outcome.ABORT))]
    assert p.resource_prepared("t1", True, "", 12) == [ApplyOutcome("t1", Outcome.ABORT)]
    assert sent(p.receive(PREPARE, 13)) == [Vote("t1", "a", False, "already aborted")]


def test_a_prepare_past_its_deadline_gets_a_no_vote() -> None:
    assert sent(Participant("a", "g").receive(PREPARE, 1_000)) == [Vote("t1", "a", False, "deadline passed")]


@pytest.mark.parametrize(("message", "code"), [
    (Prepare("t1", "b", ("a", "b"), b"", 1_000), "not_addressed"),
    (Decision("t7", Outcome.COMMIT), "commit_never_prepared"),
    (Vote("t1", "b", True), "unexpected_message"),
    (Ack("t1", "b", Outcome.COMMIT), "unexpected_message"),
])
def test_bad_input_is_an_error_and_changes_nothing(message: object, code: str) -> None:
    p = Participant("a", "g")
    out = p.receive(message, 10)  # type: ignore[arg-type]
    assert [e.code for e in out if isinstance(e, InputError)] == [code]
    assert not [e for e in out if not isinstance(e, InputError)]
    assert p.errors[code] == 1 and p.in_doubt() == () and p.record("t1") is None and p.record("t7") is None


def test_an_unexpected_resource_answer_rolls_back_what_nobody_will_vote_on() -> None:
    out = Participant("a", "g").resource_prepared("t3", True, "", 5)
    assert [type(e) for e in out] == [InputError, ApplyOutcome]


def test_an_abort_for_an_unknown_transaction_is_acknowledged() -> None:
    assert sent(Participant("a", "g").receive(Decision("t5", Outcome.ABORT), 5)) == [
        Ack("t5", "a", Outcome.ABORT)]


def test_long_decided_records_are_dropped() -> None:
    p = prepared()
    p.receive(Decision("t1", Outcome.COMMIT), 30)
    keep = ParticipantConfig().keep_decided_ms
    assert p.tick(30 + keep) == []
    assert Delete("t1") in p.tick(31 + keep)
    assert p.record("t1") is None
    with pytest.raises(ValueError, match="longest"):
        ParticipantConfig(keep_decided_ms=MAX_TIMEOUT_MS)
