"""The transaction table: presumed abort, first decision wins, commit only with every yes vote.

Unit cases for each rule, then a property run over generated command
schedules: after every command a model fed only by the commands checks that a
decision never changes, that a commit had every yes vote and a Begin, that an
ended id stays spent while its tombstone lives, and that a table restored from
a snapshot answers exactly like the original from then on.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.twopc.commands import Begin, Decide, End, Resolve, TxCommand, encode_entry
from protocols.twopc.messages import Outcome, Part, TxState
from protocols.twopc.table import TxResult, TxStateMachine, TxStatus, TxTable, decode_result, encode_result
from schemas.errors import TxError, UnsupportedVersion

PARTS = (Part("a", b"x"), Part("b", b"y"))
COMMIT = Decide("t1", Outcome.COMMIT, "", ("a", "b"))


def begun(now: int = 0, timeout: int = 100) -> TxTable:
    table = TxTable()
    assert table.apply(Begin("t1", "c", timeout, PARTS), now).status is TxStatus.OK
    return table


def test_begin_records_a_pending_transaction_with_its_deadline() -> None:
    table = begun(now=10, timeout=100)
    tx = table.get("t1")
    assert tx is not None and tx.deadline_ms == 110 and tx.participants == ("a", "b")
    assert table.state("t1") is TxState.PENDING
    assert table.apply(Begin("t1", "c", 100, PARTS), 11).status is TxStatus.NO_CHANGE
    other = table.apply(Begin("t1", "c", 100, (Part("z"),)), 12)
    assert other.status is TxStatus.REFUSED and table.get("t1") == tx


def test_commit_needs_a_yes_vote_from_every_participant() -> None:
    table = begun()
    refused = table.apply(Decide("t1", Outcome.COMMIT, "", ("a",)), 1)
    assert refused.status is TxStatus.REFUSED and "b" in refused.reason
    assert table.state("t1") is TxState.PENDING
    assert table.apply(COMMIT, 2).outcome is Outcome.COMMIT


def test_the_first_decision_wins() -> None:
    table = begun()
    assert table.apply(Decide("t1", Outcome.ABORT, "timeout"), 1).status is TxStatus.OK
    late = table.apply(COMMIT, 2)
    assert late.status is TxStatus.CONFLICT and late.outcome is Outcome.ABORT and late.reason == "timeout"
    assert table.apply(Decide("t1", Outcome.ABORT, "again"), 3).status is TxStatus.NO_CHANGE


def test_presumed_abort_through_the_log() -> None:
    table = TxTable()
    assert table.state("ghost") is None
    assert table.apply(Resolve("ghost"), 1).outcome is Outcome.ABORT
    # Once resolved, the id can never begin or commit.
    assert table.apply(Begin("ghost", "c", 100, PARTS), 2).status is TxStatus.REFUSED
    assert table.apply(Decide("ghost", Outcome.COMMIT, "", ("a", "b")), 3).outcome is Outcome.ABORT
    never = table.apply(Decide("other", Outcome.COMMIT, "", ("a",)), 4)
    assert never.status is TxStatus.REFUSED and never.outcome is Outcome.ABORT


def test_end_needs_a_decision_and_every_ack_and_leaves_a_tombstone() -> None:
    table = begun()
    assert table.apply(End("t1", ("a", "b")), 1).status is TxStatus.REFUSED  # not decided
    table.apply(COMMIT, 2)
    assert table.apply(End("t1", ("a",)), 3).status is TxStatus.REFUSED  # b has not applied it
    assert table.apply(End("t1", ("a", "b")), 4).status is TxStatus.OK
    assert table.get("t1") is None and table.outcome("t1") is Outcome.COMMIT and table.is_ended("t1")
    assert table.apply(End("t1", ("a", "b")), 5).status is TxStatus.NO_CHANGE
    assert table.apply(Begin("t1", "c", 100, PARTS), 6).status is TxStatus.REFUSED


def test_tombstones_expire_after_their_log_time() -> None:
    table = TxTable(tombstone_ms=1_000)
    table.apply(Resolve("old"), 0)
    table.apply(Resolve("new"), 600)
    table.apply(Resolve("probe"), 1_000)
    assert table.state("old") is None and table.state("new") is TxState.ABORT


def test_time_never_goes_back() -> None:
    table = begun(now=500)
    table.apply(Resolve("x"), 100)  # a new leader whose clock lags
    assert table.now_ms == 500


def test_a_malformed_entry_is_answered_and_changes_nothing() -> None:
    table = begun()
    before = table.snapshot()
    for entry in (b"", b"\xc1", msgpack.packb([1, 0, ["decide", "t1", "commit", "", "a"]])):
        assert table.apply_entry(entry).status is TxStatus.MALFORMED
    assert table.snapshot() == before


def test_results_round_trip_and_refuse_other_versions() -> None:
    result = begun().apply(COMMIT, 3)
    assert decode_result(encode_result(result)) == result
    with pytest.raises(UnsupportedVersion):
        decode_result(msgpack.packb([9, "ok", "decide", "t1", "commit", "", 3]))


def test_a_malformed_snapshot_changes_nothing() -> None:
    table = begun()
    before = table.snapshot()
    for bad in (b"\x00", msgpack.packb([1, 0, [["t", "c", [], 0, 0, None, "", None]] * 2, []]),
                msgpack.packb([1, 0, [], [["t", "maybe", "", 0]]])):
        with pytest.raises(TxError):
            table.restore(bad)
    assert table.snapshot() == before


def test_the_raft_state_machine_replies_with_results_and_keeps_them_for_the_manager() -> None:
    machine = TxStateMachine()
    reply = machine.apply(encode_entry(5, Begin("t1", "c", 100, PARTS)))
    assert decode_result(reply).status is TxStatus.OK
    assert decode_result(machine.apply(b"junk")).status is TxStatus.MALFORMED
    assert [r.status for r in machine.drain_results()] == [TxStatus.OK, TxStatus.MALFORMED]
    assert machine.drain_results() == []
    copy = TxStateMachine()
    copy.restore(machine.snapshot())
    assert copy.table.state("t1") is TxState.PENDING


# ---- property: random schedules against a model --------------------------------------------------

TXS = ("t1", "t2", "t3")
PEOPLE = ("a", "b", "c")
tx_id = st.sampled_from(TXS)
people = st.lists(st.sampled_from(PEOPLE), unique=True, max_size=3).map(tuple)
command = st.one_of(
    st.builds(lambda t, ps, to: Begin(t, "client", to, tuple(Part(p) for p in ps) or (Part("a"),)),
              tx_id, people, st.integers(1, 500)),
    st.builds(lambda t, o, ps: Decide(t, o, "r", ps), tx_id, st.sampled_from(Outcome), people),
    st.builds(End, tx_id, people),
    st.builds(Resolve, tx_id),
)
schedule = st.lists(st.tuples(command, st.integers(0, 300), st.booleans()), max_size=40)


@settings(max_examples=200, deadline=None)
@given(schedule)
def test_decisions_are_final_and_commits_are_voted(steps: list[tuple[TxCommand, int, bool]]) -> None:
    table, shadow = TxTable(tombstone_ms=2_000), None
    now = 0
    decided: dict[str, Outcome] = {}
    parts: dict[str, tuple[str, ...]] = {}
    for cmd, dt, snap in steps:
        now += dt
        if snap:  # a replica restored from a snapshot must behave the same from here on
            shadow = TxTable(tombstone_ms=2_000)
            shadow.restore(table.snapshot())
        entry = encode_entry(now, cmd)
        result = table.apply_entry(entry)
        if shadow is not None:
            assert shadow.apply_entry(entry) == result
            assert shadow.snapshot() == table.snapshot()
        check_result(table, cmd, result, decided, parts)


def check_result(table: TxTable, cmd: TxCommand, result: TxResult, decided: dict[str, Outcome],
                 parts: dict[str, tuple[str, ...]]) -> None:
    if isinstance(cmd, Begin) and result.status is TxStatus.OK:
        parts[cmd.tx_id] = tuple(p.participant for p in cmd.parts)
        decided.pop(cmd.tx_id, None)  # only after its tombstone expired: a new transaction
    outcome = table.outcome(cmd.tx_id)
    if cmd.tx_id in decided and table.state(cmd.tx_id) is not None:
        assert outcome is decided[cmd.tx_id], f"{cmd.tx_id} changed its decision"
    if outcome is not None:
        decided.setdefault(cmd.tx_id, outcome)
    if isinstance(cmd, Decide) and result.status is TxStatus.OK and cmd.outcome is Outcome.COMMIT:
        assert set(parts[cmd.tx_id]) <= set(cmd.yes_votes), "committed without every yes vote"
    if isinstance(cmd, End) and result.status is TxStatus.OK:
        assert set(parts[cmd.tx_id]) <= set(cmd.acked) and table.get(cmd.tx_id) is None
