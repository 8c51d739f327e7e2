"""Property tests of two-phase commit: hypothesis picks seeds; each seed is a whole faulty run.

Every run is judged by every checker (atomicity, only logged commits, decided
before told, commit needs every yes vote, prepared records durable, replicas
agree, and liveness after healing). A failure prints the seed;
``protocols.twopc.sim.run_twopc(seed, <config>)`` re-runs it exactly. The
broken variants at the end show that each checker catches the bug it exists
for.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.sim.network import NetworkProfile
from protocols.twopc.commands import Decide, TxCommand
from protocols.twopc.effects import Effect, Send
from protocols.twopc.manager import TxManager
from protocols.twopc.messages import Decision, Outcome, StatusQuery, StatusReply, TxState
from protocols.twopc.participant import Participant
from protocols.twopc.records import ParticipantRecord
from protocols.twopc.sim import TwoPcReport, TwoPcSimConfig, run_twopc
from protocols.twopc.table import TxRecord, TxTable

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

DEFAULT = TwoPcSimConfig()
# every process crashing at once, often, and crashes at the protocol's dangerous moments
CRASHY = replace(DEFAULT, fault_weights=(
    ("crash_all", 3), ("crash_leader", 2), ("crash_participant", 2), ("heal", 2),
    ("trap_before_decide", 2), ("trap_after_decide", 2), ("trap_mid_tell", 2), ("trap_preparing", 1),
    ("trap_after_prepare", 2), ("trap_after_vote", 2), ("trap_after_apply", 2),
))
# every message may be lost, duplicated (often) or overtaken
LOSSY = replace(DEFAULT, network=NetworkProfile(loss=0.25, duplicate=0.3, spike_chance=0.2, spike_delay=300))
# every message delivered twice (and some overtaken): nothing may change
TWICE = replace(DEFAULT, network=NetworkProfile(loss=0.02, duplicate=1.0, spike_chance=0.1))
# partitions that cut the group, participants and the client apart
PARTITIONS = replace(DEFAULT, fault_weights=(("partition", 5), ("isolate_leader", 3), ("heal", 3)))
# slow disks: writes queue up, crashes lose them
SLOW_DISK = replace(DEFAULT, disk_delay=(0, 40), fault_weights=(
    ("crash_node", 2), ("crash_leader", 2), ("crash_participant", 2), ("trap_after_prepare", 2),
    ("trap_after_apply", 2), ("heal", 1),
))
# five participants per transaction, seven transactions racing for three keys
CONTENDED = replace(DEFAULT, participants=5, parts_per_tx=(3, 5), keys=3, transactions=14)


def assert_seed_ok(seed: int, cfg: TwoPcSimConfig) -> TwoPcReport:
    report = run_twopc(seed, cfg)
    assert report.ok, f"{report.summary()}\nreplay with protocols.twopc.sim.run_twopc({seed}, <config>)"
    assert report.history.begun, f"seed {seed}: no transaction was begun at all"
    return report


@settings(FAST, max_examples=100)
@given(SEEDS)
def test_default_faults(seed: int) -> None:
    assert_seed_ok(seed, DEFAULT)


@settings(FAST, max_examples=60)
@given(SEEDS)
def test_crashes_at_every_dangerous_moment(seed: int) -> None:
    assert_seed_ok(seed, CRASHY)


@settings(FAST, max_examples=60)
@given(SEEDS)
def test_lossy_duplicating_network(seed: int) -> None:
    assert_seed_ok(seed, LOSSY)


@settings(FAST, max_examples=30)
@given(SEEDS)
def test_every_message_duplicated(seed: int) -> None:
    assert_seed_ok(seed, TWICE)


@settings(FAST, max_examples=40)
@given(SEEDS)
def test_partitions(seed: int) -> None:
    assert_seed_ok(seed, PARTITIONS)


@settings(FAST, max_examples=40)
@given(SEEDS)
def test_slow_disks(seed: int) -> None:
    assert_seed_ok(seed, SLOW_DISK)


@settings(FAST, max_examples=40)
@given(SEEDS)
def test_contended_keys(seed: int) -> None:
    assert_seed_ok(seed, CONTENDED)


def test_runs_commit_abort_and_spring_every_trap() -> None:
    """The runs are not vacuous: over a few seeds, both outcomes occur and every trap fires."""
    sprung: set[str] = set()
    outcomes: set[Outcome] = set()
    for seed in range(40):
        report = assert_seed_ok(seed, CRASHY)
        sprung |= {kind.split()[1] for _, kind in report.history.faults if kind.startswith("sprung")}
        outcomes |= {o for o, _ in report.history.decided.values()}
        assert report.history.finished_at is not None
    assert outcomes == {Outcome.COMMIT, Outcome.ABORT}
    assert sprung == {"before_decide", "after_decide", "mid_tell", "preparing", "after_prepare",
                      "after_vote", "after_apply"}


def test_a_seed_replays_exactly() -> None:
    a, b = run_twopc(7, CRASHY), run_twopc(7, CRASHY)
    assert a.history == b.history


PROFILES = {
    "default": DEFAULT, "crashy": CRASHY, "lossy": LOSSY, "partitions": PARTITIONS, "slow-disk": SLOW_DISK,
    "contended": CONTENDED, "twice": TWICE,
}
SLOW_SEEDS, SLOW_CHUNK = 600, 100  # per profile: 3,600 runs, in chunks that stay well inside the timeout


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, SLOW_SEEDS, SLOW_CHUNK))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_thousands_of_seeds(profile: str, start: int) -> None:
    for seed in range(10_000 + start, 10_000 + start + SLOW_CHUNK):
        assert_seed_ok(seed, PROFILES[profile])


# ---- broken variants: each checker catches the bug it exists for --------------------------------


class TellsBeforeLogging(TxManager):
    """Sends the decision as soon as it proposes it, before the entry is committed."""

    def _propose(self, command: TxCommand, now_ms: int) -> list[Effect]:
        out = super()._propose(command, now_ms)
        tx = self.table.get(command.tx_id)
        if out and isinstance(command, Decide) and tx is not None:
            out += [Send(p, Decision(tx.tx_id, command.outcome, command.reason)) for p in tx.participants]
        return out


class VotesBeforePersisting(Participant):
    """Sends its yes vote before its prepared record is durable."""

    def _vote_yes(self, rec: ParticipantRecord) -> list[Effect]:
        out = super()._vote_yes(rec)
        return [e for e in out if isinstance(e, Send)] + [e for e in out if not isinstance(e, Send)]


class CommitsOnOneVote(TxManager):
    def _may_commit(self, tx: TxRecord, yes_votes: tuple[str, ...]) -> bool:
        return bool(yes_votes)


class TrustingTable(TxTable):
    def _missing_votes(self, tx: TxRecord, cmd: Decide) -> list[str]:
        return []


class GivesUpInDoubt(Participant):
    """The textbook mistake 'not to block': abort on its own when in doubt for too long."""

    def tick(self, now_ms: int) -> list[Effect]:
        out = super().tick(now_ms)
        for tx_id in self.in_doubt():
            rec = self.record(tx_id)
            if rec is not None and now_ms - rec.prepared_ms > 400:
                out += self._on_outcome(tx_id, Outcome.ABORT, now_ms)
        return out


class ForgetsOnFailover(TxManager):
    """A new leader that does not pick up the transactions its predecessor started."""

    def became_leader(self, now_ms: int) -> list[Effect]:
        super().became_leader(now_ms)
        return []

    def tick(self, now_ms: int) -> list[Effect]:
        return []


class ReadsAbsenceAsAbort(TxManager):
    """Answers an in-doubt participant "no record, so abort" from its own replica.

    A new leader holds every committed entry but applies them only once an
    entry of its own term commits, so its table may lack a transaction that is
    already committed. The real manager reads absence through the log (Resolve).
    """

    def _on_query(self, m: StatusQuery, now_ms: int) -> list[Effect]:
        if self.table.state(m.tx_id) is None:
            return [Send(m.asker, StatusReply(m.tx_id, TxState.ABORT, "no record"))]
        return super()._on_query(m, now_ms)


def caught(seeds: range, **factories: object) -> dict[str, int]:
    """How many runs each checker failed."""
    counts: dict[str, int] = {}
    for seed in seeds:
        report = run_twopc(seed, DEFAULT, **factories)  # type: ignore[arg-type]
        for name, problems in report.violations.items():
            if problems:
                counts[name] = counts.get(name, 0) + 1
    return counts


def test_telling_before_the_decision_is_logged_is_caught() -> None:
    counts = caught(range(6), manager_factory=TellsBeforeLogging)
    assert counts.get("decided_before_told", 0) == 6


def test_voting_yes_before_the_prepared_record_is_durable_is_caught() -> None:
    counts = caught(range(20), participant_factory=VotesBeforePersisting)
    assert counts.get("prepared_durable", 0) >= 2


def test_a_commit_with_a_missing_vote_is_caught() -> None:
    counts = caught(range(6), manager_factory=CommitsOnOneVote, table_factory=TrustingTable)
    assert counts.get("commit_needs_every_yes", 0) >= 5


def test_the_table_refuses_a_commit_with_a_missing_vote_from_a_broken_manager() -> None:
    assert caught(range(6), manager_factory=CommitsOnOneVote) == {}


def test_a_participant_that_gives_up_in_doubt_breaks_atomicity() -> None:
    counts = caught(range(20), participant_factory=GivesUpInDoubt)
    assert counts.get("atomicity", 0) >= 3


def test_a_leader_that_does_not_finish_its_predecessors_transactions_is_caught() -> None:
    counts = caught(range(6), manager_factory=ForgetsOnFailover)
    assert counts.get("liveness", 0) >= 5


def test_reading_absence_from_a_lagging_replica_as_abort_is_caught() -> None:
    """A rare schedule (seed 1253 of CRASHY, the first in a sweep of 2000): a new leader's lagging table."""
    broken = run_twopc(1253, CRASHY, manager_factory=ReadsAbsenceAsAbort)
    assert broken.violations["atomicity"] and broken.violations["only_logged_commits"]
    assert_seed_ok(1253, CRASHY)
