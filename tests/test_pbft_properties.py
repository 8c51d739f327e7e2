"""PBFT property tests: hypothesis picks seeds; each seed is a whole faulty run (n=4, f=1) judged afterwards.

A failure prints the seed; ``protocols.pbft.sim.run_seed(seed, config)`` re-runs it exactly.
Profiles cover loss, duplication, reordering, partitions, crashes and pauses, each
with one Byzantine replica of every kind the issue names; the second half shows
each checker catching a deliberately broken replica or client.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.pbft.client import Client
from protocols.pbft.replica import Replica
from protocols.pbft.sim import PbftRunReport, PbftSimConfig, run_seed
from protocols.sim.network import CALM
from tests.pbft_variants import (
    CredulousClient,
    ExecutesDuplicates,
    IgnoresEvidence,
    NeverChangesView,
    SmallQuorums,
    TrustsSignatures,
)

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

DEFAULT = PbftSimConfig()
LOSSY = replace(DEFAULT, network=replace(DEFAULT.network, loss=0.2, duplicate=0.15, spike_chance=0.2))
PROFILES = {
    "crash-faults": DEFAULT,
    "lossy": LOSSY,
    "equivocating-primary": replace(DEFAULT, byzantine=("equivocating-primary",)),
    "silent-primary": replace(DEFAULT, byzantine=("silent-primary",)),
    "replayer": replace(DEFAULT, byzantine=("replayer",)),
    "forger": replace(DEFAULT, byzantine=("forger",)),
    "garbage": replace(DEFAULT, byzantine=("garbage",)),
    "lossy-equivocating": replace(LOSSY, byzantine=("equivocating-primary",)),
}


def assert_seed_ok(seed: int, cfg: PbftSimConfig) -> PbftRunReport:
    report = run_seed(seed, cfg)
    assert report.ok, f"{report.summary()}\nreplay with protocols.pbft.sim.run_seed({seed}, <config>)"
    assert report.history.acceptances, f"seed {seed}: no request was accepted at all"
    return report


# 8 profiles x 15 seeds = 120 faulty runs in the default run (about 22 s here); thousands in test-slow
@settings(FAST, max_examples=15)
@given(SEEDS)
def test_crash_faults(seed: int) -> None:
    assert_seed_ok(seed, PROFILES["crash-faults"])


@settings(FAST, max_examples=15)
@given(SEEDS)
def test_lossy_network(seed: int) -> None:
    assert_seed_ok(seed, PROFILES["lossy"])


@settings(FAST, max_examples=15)
@given(SEEDS)
def test_equivocating_primary_is_proven_and_quarantined(seed: int) -> None:
    report = assert_seed_ok(seed, PROFILES["equivocating-primary"])
    liar = next(iter(report.history.byzantine))
    # the run must actually have exercised the evidence path, else the checker proved nothing
    assert liar in report.history.exposed, report.summary()
    assert all(liar in q for q in report.history.final_quarantined.values()), report.summary()


@settings(FAST, max_examples=15)
@given(SEEDS)
def test_silent_primary_is_replaced(seed: int) -> None:
    report = assert_seed_ok(seed, PROFILES["silent-primary"])
    assert report.history.views, "the silent primary was never replaced"


@settings(FAST, max_examples=15)
@given(SEEDS)
def test_replayer(seed: int) -> None:
    assert_seed_ok(seed, PROFILES["replayer"])


@settings(FAST, max_examples=15)
@given(SEEDS)
def test_forger(seed: int) -> None:
    report = assert_seed_ok(seed, PROFILES["forger"])
    dropped = report.history.dropped
    # (once the forger has been caught lying, its frames are dropped before their signatures are checked)
    assert dropped.get("bad-signature", 0) + dropped.get("unknown-key", 0) + dropped.get("quarantined", 0) > 0


@settings(FAST, max_examples=15)
@given(SEEDS)
def test_garbage_sender(seed: int) -> None:
    report = assert_seed_ok(seed, PROFILES["garbage"])
    assert report.history.dropped.get("malformed", 0) > 0


@settings(FAST, max_examples=15)
@given(SEEDS)
def test_lossy_network_and_equivocating_primary(seed: int) -> None:
    assert_seed_ok(seed, PROFILES["lossy-equivocating"])


SLOW_SEEDS, SLOW_CHUNK = 500, 100  # per profile: 4,000 runs, in chunks well inside the 120 s test timeout


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, SLOW_SEEDS, SLOW_CHUNK))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_many_seeds(profile: str, start: int) -> None:
    """make test-slow: 500 consecutive seeds per profile (4,000 runs), in chunks of 100."""
    cfg = PROFILES[profile]
    failures = [r.summary() for r in (run_seed(s, cfg) for s in range(start, start + SLOW_CHUNK)) if not r.ok]
    assert not failures, f"profile {profile}:\n" + "\n".join(failures[:10])


# ------------------------------------------------ the checkers can fail


def _caught(checker: str, cfg: PbftSimConfig, replica: type[Replica] = Replica,
            client: type[Client] = Client, seeds: int = 10) -> bool:
    """Some seed among the first ``seeds`` makes ``checker`` report the broken variant."""
    return any(run_seed(s, cfg, replica, client).violations[checker] for s in range(seeds))


def test_agreement_checker_catches_small_quorums() -> None:
    """Prepared at 2f (not 2f+1) and committed at 2f: an equivocating primary splits the honest replicas."""
    cfg = replace(DEFAULT, byzantine=("equivocating-primary",), network=CALM, fault_weights=())
    assert _caught("agreement", cfg, SmallQuorums)


def test_evidence_checker_catches_a_replica_that_ignores_proofs() -> None:
    assert _caught("evidence", PROFILES["equivocating-primary"], IgnoresEvidence, seeds=3)


def test_evidence_checker_catches_false_accusations_when_signatures_are_not_checked() -> None:
    assert _caught("evidence", PROFILES["forger"], TrustsSignatures, seeds=3)


def test_liveness_checker_catches_a_replica_that_never_changes_view() -> None:
    assert _caught("liveness", PROFILES["silent-primary"], NeverChangesView, seeds=3)


def test_client_checker_catches_a_client_that_trusts_one_reply() -> None:
    assert _caught("client_validity", PROFILES["forger"], Replica, CredulousClient, seeds=3)


def test_executed_once_checker_catches_a_replica_without_deduplication() -> None:
    """A client's retransmission taken for a new request runs it twice (at two sequence numbers)."""
    assert _caught("executed_once", PROFILES["lossy"], ExecutesDuplicates, seeds=3)
