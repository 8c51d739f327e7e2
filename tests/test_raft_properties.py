"""Property tests: hypothesis picks seeds; each seed is a whole faulty run checked afterwards.

A failure prints the seed; ``protocols.sim.replay(seed, config)`` re-runs it exactly.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.raft import Entry, HardState, RaftConfig, RaftNode, Snapshot, VoteRequest
from protocols.raft.sessions import Sessions
from protocols.sim import SimConfig, replay
from protocols.sim.cluster import NodeFactory

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(deadline=None, derandomize=False, suppress_health_check=[HealthCheck.too_slow], database=None)

DEFAULT = SimConfig()
# all nodes crashing at once, often, and crashes between persisting and sending
CRASHY = replace(
    DEFAULT,
    fault_weights=(("crash_all", 3), ("crash", 2), ("crash_leader", 2), ("heal", 2), ("partition", 1)),
    torn_crash=0.01,
)
# no compaction: long logs, fast back-off over many entries
NO_SNAPSHOTS = replace(DEFAULT, raft=RaftConfig(election_ticks=10, heartbeat_ticks=2, snapshot_threshold=0))
# membership changes and leadership transfers under partitions, three nodes plus two spares
RECONFIG = replace(
    DEFAULT, nodes=3, spare_nodes=2,
    fault_weights=(
        ("membership", 4), ("transfer", 3), ("partition", 2), ("heal", 3), ("crash", 1), ("pause", 1),
    ),
)
LOSSY = replace(DEFAULT, network=replace(DEFAULT.network, loss=0.25, duplicate=0.15, spike_chance=0.2))
# a slow disk and crashes mid-write: followers' acks overtake the leader's own write (thesis 10.2.1)
SLOW_DISK = replace(DEFAULT, disk_delay=(0, 15), lost_write_crash=0.02)
# three nodes crashing everywhere on a slow disk: a lost write or a lost vote matters at once, and
# unsynced commit-only writes are lost while elections go on
CRASHY_SLOW_DISK = replace(CRASHY, nodes=3, disk_delay=(0, 15), lost_write_crash=0.02)


def assert_seed_ok(seed: int, cfg: SimConfig, factory: NodeFactory | None = None) -> None:
    report = replay(seed, cfg, factory)
    assert report.ok, f"{report.summary()}\nreplay with protocols.sim.replay({seed}, <config>)"
    assert report.history.acks, f"seed {seed}: no command was acknowledged at all"


@settings(FAST, max_examples=100)
@given(SEEDS)
def test_default_faults(seed: int) -> None:
    assert_seed_ok(seed, DEFAULT)


@settings(FAST, max_examples=50)
@given(SEEDS)
def test_whole_cluster_crashes(seed: int) -> None:
    assert_seed_ok(seed, CRASHY)


@settings(FAST, max_examples=30)
@given(SEEDS)
def test_without_snapshots(seed: int) -> None:
    assert_seed_ok(seed, NO_SNAPSHOTS)


@settings(FAST, max_examples=30)
@given(SEEDS)
def test_membership_and_transfer(seed: int) -> None:
    assert_seed_ok(seed, RECONFIG)


@settings(FAST, max_examples=30)
@given(SEEDS)
def test_lossy_network(seed: int) -> None:
    assert_seed_ok(seed, LOSSY)


@settings(FAST, max_examples=30)
@given(SEEDS)
def test_slow_disk(seed: int) -> None:
    assert_seed_ok(seed, SLOW_DISK)


@settings(FAST, max_examples=30)
@given(SEEDS)
def test_crashes_on_a_slow_disk(seed: int) -> None:
    assert_seed_ok(seed, CRASHY_SLOW_DISK)


PROFILES = {
    "default": DEFAULT, "crashy": CRASHY, "no-snapshots": NO_SNAPSHOTS, "reconfig": RECONFIG, "lossy": LOSSY,
    "slow-disk": SLOW_DISK, "crashy-slow-disk": CRASHY_SLOW_DISK,
}
SLOW_SEEDS, SLOW_CHUNK = 500, 250  # per profile: 3,500 runs (about 4 minutes here)


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, SLOW_SEEDS, SLOW_CHUNK))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_many_seeds(profile: str, start: int) -> None:
    """make test-slow: 500 consecutive seeds per profile (3,500 runs), in chunks of 250."""
    cfg = PROFILES[profile]
    failures = [r.summary() for r in (replay(s, cfg) for s in range(start, start + SLOW_CHUNK)) if not r.ok]
    assert not failures, f"profile {profile}:\n" + "\n".join(failures[:10])


# ------------------------------------------------ the checkers can fail


class DoubleVote(RaftNode):
    def _grants_vote(self, m: VoteRequest) -> bool:  # forgets "one vote per term"
        return self.log.is_up_to_date(m.last_term, m.last_index) and (not m.pre_vote or m.term > self.term)


class StaleLogVote(RaftNode):
    def _grants_vote(self, m: VoteRequest) -> bool:  # forgets the election restriction
        return m.term > self.term if m.pre_vote else self.voted_for in (None, m.src)


class NoConsistencyCheck(RaftNode):
    def _matches_prev(self, index: int, term: int) -> bool:
        return index <= self.log.last_index


class ForgetfulSessions(Sessions):
    def seen(self, client_id: str, request_seq: int) -> tuple[bool, bytes | None]:
        return False, None


class NoDedup(RaftNode):
    sessions_class = ForgetfulSessions


def _first_failure(cfg: SimConfig, factory: NodeFactory | None, check: str, limit: int = 60) -> int | None:
    for seed in range(limit):
        if replay(seed, cfg, factory).violations[check]:
            return seed
    return None


@pytest.mark.parametrize(
    ("variant", "check"),
    [
        (DoubleVote, "election_safety"),
        (StaleLogVote, "committed_durability"),
        (StaleLogVote, "state_machine_safety"),
        (NoConsistencyCheck, "log_matching"),
        (NoDedup, "exactly_once"),
    ],
)
def test_checker_catches_broken_variant(variant: type[RaftNode], check: str) -> None:
    assert _first_failure(DEFAULT, variant, check) is not None, f"{check} never caught {variant.__name__}"


def test_checker_catches_a_driver_that_sends_before_persisting() -> None:
    broken = replace(CRASHY, send_before_persist=True, torn_crash=0.05)
    assert _first_failure(broken, None, "committed_durability") is not None


class CountsItselfEarly(RaftNode):
    def _own_match(self) -> int:  # counts its own entries before its driver reported them durable
        return self.log.last_index


def test_checker_catches_a_leader_that_counts_its_unwritten_entries() -> None:
    assert _first_failure(CRASHY_SLOW_DISK, CountsItselfEarly, "committed_durability") is not None


class SkipsSyncOfVotes(RaftNode):
    def _must_sync(  # sends a vote before it is durable: a crash forgets it, and it votes again
        self, hard_state: HardState | None, previous: HardState, entries: tuple[Entry, ...],
        snapshot: Snapshot | None,
    ) -> bool:
        return bool(entries) or snapshot is not None


class SkipsSyncOfEntries(RaftNode):
    def _must_sync(  # acknowledges entries before they are durable: a crash loses committed ones
        self, hard_state: HardState | None, previous: HardState, entries: tuple[Entry, ...],
        snapshot: Snapshot | None,
    ) -> bool:
        return super()._must_sync(hard_state, previous, (), snapshot)


@pytest.mark.parametrize(
    ("variant", "cfg", "check"),
    [
        (SkipsSyncOfVotes, CRASHY_SLOW_DISK, "election_safety"),
        (SkipsSyncOfEntries, DEFAULT, "committed_durability"),
    ],
)
def test_checker_catches_a_wrong_must_sync_rule(variant: type[RaftNode], cfg: SimConfig, check: str) -> None:
    """The simulator sends a batch that need not be synced before writing it and a crash loses it,
    as the MQTT driver and SQLite do: a rule that lets a vote or an entry through is caught."""
    assert _first_failure(cfg, variant, check) is not None, f"{check} never caught {variant.__name__}"


def test_liveness_checker_catches_a_cluster_that_never_elects() -> None:
    class Mute(RaftNode):
        def tick(self) -> None:  # never campaigns
            pass

    assert replay(0, DEFAULT, Mute).violations["liveness"]
