"""The fleet decision log (protocols/pbft/fleet_log.py): a quorum of proposers decides, deterministically."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.pbft import Decision, FleetDecisionLog

PROPOSERS = ("gw-a", "gw-b", "gw-c", "liar")


def op(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def result(log: FleetDecisionLog, client: str, **doc: object) -> dict[str, object]:
    out: dict[str, object] = json.loads(log.apply(op(**doc), client))
    return out


def test_one_proposer_never_decides_however_often_it_asks() -> None:
    log = FleetDecisionLog(quorum=2)
    for _ in range(5):
        assert result(log, "liar", op="quarantine", device="cam-7") == {"status": "pending", "votes": 1,
                                                                         "needed": 2}
    assert log.quarantined == set() and log.decisions == []


def test_two_proposers_decide_a_quarantine_and_a_release() -> None:
    log = FleetDecisionLog(quorum=2)
    result(log, "gw-a", op="quarantine", device="cam-7")
    assert result(log, "gw-b", op="quarantine", device="cam-7") == {"status": "decided", "index": 1}
    assert log.quarantined == {"cam-7"}
    assert result(log, "gw-c", op="quarantine", device="cam-7") == {"status": "in_effect"}
    result(log, "gw-a", op="release", device="cam-7")
    assert result(log, "gw-c", op="release", device="cam-7")["status"] == "decided"
    assert log.quarantined == set()
    assert [(d.kind, d.subject, d.proposers) for d in log.decisions] == [
        ("quarantine", "cam-7", ("gw-a", "gw-b")), ("release", "cam-7", ("gw-a", "gw-c"))]


def test_a_model_version_is_accepted_only_when_a_quorum_names_the_same_one() -> None:
    log = FleetDecisionLog(quorum=2)
    result(log, "gw-a", op="accept_model", group="lobby", version="v2")
    assert result(log, "liar", op="accept_model", group="lobby", version="v666")["status"] == "pending"
    assert log.models == {}
    assert result(log, "gw-b", op="accept_model", group="lobby", version="v2")["status"] == "decided"
    assert log.models == {"lobby": "v2"}


def test_a_later_vote_replaces_the_proposers_earlier_one() -> None:
    log = FleetDecisionLog(quorum=2)
    result(log, "gw-a", op="accept_model", group="lobby", version="v1")
    result(log, "gw-a", op="accept_model", group="lobby", version="v2")
    assert log.votes == {"model/lobby": {"gw-a": "v2"}}
    assert result(log, "gw-b", op="accept_model", group="lobby", version="v1")["status"] == "pending"


def test_bad_operations_are_answered_not_raised() -> None:
    log = FleetDecisionLog()
    for bad in (b"not json", b"[1]", op(op="quarantine"), op(op="quarantine", device=""),
                op(op="quarantine", device="x" * 200), op(op="launch"), op(op="read", since=-1),
                op(op="read", since=True), op(op="accept_model", group="g", version=3)):
        assert json.loads(log.apply(bad, "gw-a"))["status"] == "error"
    assert log.decisions == [] and log.votes == {}


def test_reads_page_through_the_decisions() -> None:
    log = FleetDecisionLog(quorum=1)
    for i in range(150):
        result(log, "gw-a", op="quarantine" if i % 2 == 0 else "release", device="cam-1")
    page = result(log, "coord", op="read", since=0)
    assert page["total"] == 150 and len(page["decisions"]) == 100  # type: ignore[arg-type]
    rest = result(log, "coord", op="read", since=100)
    decisions = [Decision.from_json(d) for d in rest["decisions"]]  # type: ignore[attr-defined]
    assert [d.index for d in decisions] == list(range(101, 151))


OPS = st.one_of(
    st.builds(lambda d: {"op": "quarantine", "device": d}, st.sampled_from(["cam-1", "cam-2"])),
    st.builds(lambda d: {"op": "release", "device": d}, st.sampled_from(["cam-1", "cam-2"])),
    st.builds(lambda g, v: {"op": "accept_model", "group": g, "version": v},
              st.sampled_from(["lobby", "yard"]), st.sampled_from(["v1", "v2", "v3"])),
    st.builds(lambda n: {"op": "read", "since": n}, st.integers(0, 5)),
    st.just({"op": "nonsense"}),
)
HISTORY = st.lists(st.tuples(st.sampled_from(PROPOSERS), OPS), max_size=60)


@settings(max_examples=200, deadline=None)
@given(history=HISTORY, quorum=st.integers(1, 3), cut=st.integers(0, 60))
def test_replicas_agree_and_a_restored_snapshot_continues_identically(
        history: list[tuple[str, dict[str, object]]], quorum: int, cut: int) -> None:
    a, b = FleetDecisionLog(quorum), FleetDecisionLog(quorum)
    restored = FleetDecisionLog(1)
    for i, (client, doc) in enumerate(history):
        if i == cut:
            restored.restore(b.snapshot())
        ra, rb = a.apply(op(**doc), client), b.apply(op(**doc), client)
        assert ra == rb  # deterministic: same operations in the same order, same results
        if i >= cut:
            assert restored.apply(op(**doc), client) == ra
    assert a.snapshot() == b.snapshot()
    if cut < len(history):
        assert restored.snapshot() == a.snapshot()


@settings(max_examples=200, deadline=None)
@given(history=st.lists(OPS, max_size=60))
def test_a_single_proposer_never_decides_with_a_quorum_of_two(history: list[dict[str, object]]) -> None:
    log = FleetDecisionLog(quorum=2)
    for doc in history:
        log.apply(op(**doc), "liar")
    assert log.decisions == [] and log.quarantined == set() and log.models == {}
    assert sum(len(v) for v in log.votes.values()) <= 4  # one vote per subject: 2 devices + 2 groups


@settings(max_examples=200, deadline=None)
@given(history=HISTORY)
def test_every_decision_names_a_quorum_of_distinct_proposers(
        history: list[tuple[str, dict[str, object]]]) -> None:
    log = FleetDecisionLog(quorum=2)
    for client, doc in history:
        log.apply(op(**doc), client)
    for d in log.decisions:
        assert len(set(d.proposers)) >= 2
    replayed: set[str] = set()  # the state is what the decisions say, in order
    for d in log.decisions:
        if d.kind == "quarantine":
            replayed.add(d.subject)
        elif d.kind == "release":
            replayed.discard(d.subject)
    assert log.quarantined == replayed
