"""The staged rollout (protocols/ota/rollout.py): canary first, bounded parallelism, halting."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.ota import Outcome, Rollout, RolloutPolicy, RolloutStage, outcome_of
from schemas.ota import Phase

FAILURES = (Outcome.FAILED, Outcome.TIMED_OUT)

policies = st.builds(RolloutPolicy, canary_fraction=st.floats(0.01, 1.0),
                     max_failure_fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
                     parallel=st.integers(1, 6))


def plans(failure_rate: st.SearchStrategy[float]) -> st.SearchStrategy[dict[str, Outcome]]:
    """A fleet and how each device's update would end."""
    def build(n: int, rate: float, seed: int) -> dict[str, Outcome]:
        rng = random.Random(seed)
        return {f"dev-{i:02d}": (rng.choice(FAILURES) if rng.random() < rate else Outcome.COMMITTED)
                for i in range(n)}
    return st.builds(build, st.integers(0, 30), failure_rate, st.integers(0, 2**32))


def run(plan: dict[str, Outcome], policy: RolloutPolicy, seed: int) -> tuple[Rollout, list[str]]:
    """Drive a rollout: outcomes arrive for in-flight devices in a random order."""
    rng = random.Random(seed)
    rollout = Rollout(list(plan), policy)
    offered: list[str] = []
    in_flight: list[str] = []

    def offer(devices: list[str]) -> None:
        offered.extend(devices)
        in_flight.extend(devices)
        assert len(in_flight) == len(rollout.pending) <= policy.parallel
        assert set(in_flight) == rollout.pending

    offer(rollout.start())
    assert rollout.start() == []
    while in_flight:
        device = in_flight.pop(rng.randrange(len(in_flight)))
        offer(rollout.on_outcome(device, plan[device]))
    assert rollout.finished
    return rollout, offered


@settings(max_examples=300)
@given(plan=plans(st.floats(0, 0.6)), policy=policies, seed=st.integers(0, 2**32))
def test_rollout_follows_the_canary_and_threshold_rules(plan: dict[str, Outcome], policy: RolloutPolicy,
                                                        seed: int) -> None:
    rollout, offered = run(plan, policy, seed)
    devices = list(plan)
    assert len(offered) == len(set(offered)), "a device was offered the update twice"
    canary_size = max(1, math.ceil(policy.canary_fraction * len(devices))) if devices else 0
    canary, rest = devices[:canary_size], devices[canary_size:]
    assert rollout.canary == tuple(canary) and rollout.rest == tuple(rest)
    assert offered[:len(canary)] == canary[:len(offered)]  # the canary goes first, in the given order
    assert set(rollout.results) == set(offered)
    assert all(rollout.results[d] is plan[d] for d in offered)

    def too_many(stage: list[str]) -> bool:
        failed = sum(plan[d] in FAILURES for d in stage)
        return bool(stage) and failed / len(stage) > policy.max_failure_fraction

    if too_many(canary):
        assert rollout.stage is RolloutStage.HALTED
        assert rollout.halted_reason is not None and rollout.halted_reason.startswith("canary")
        assert not set(offered) & set(rest), "a REST device was offered after the canary failed"
    elif too_many(rest):
        assert set(canary) <= set(offered)
        assert rollout.stage is RolloutStage.HALTED
        assert rollout.halted_reason is not None and rollout.halted_reason.startswith("rest")
    else:
        assert rollout.stage is RolloutStage.DONE and rollout.halted_reason is None
        assert sorted(offered) == sorted(devices)
    summary = rollout.summary()
    assert summary["stage"] == rollout.stage.value
    assert summary["committed"] + summary["failed"] + summary["timed_out"] == len(offered)
    assert sorted(summary["not_offered"]) == sorted(set(devices) - set(offered))


@settings(max_examples=100)
@given(plan=plans(st.just(0.0)), policy=policies, seed=st.integers(0, 2**32))
def test_without_failures_every_device_is_offered_exactly_once(plan: dict[str, Outcome],
                                                               policy: RolloutPolicy, seed: int) -> None:
    rollout, offered = run(plan, policy, seed)
    assert sorted(offered) == sorted(plan)
    assert rollout.stage is RolloutStage.DONE
    assert dict(rollout.results) == plan and rollout.pending == frozenset()


# -- units ----------------------------------------------------------------------------


def fleet(n: int) -> list[str]:
    return [f"d{i}" for i in range(n)]


def test_canary_then_rest_in_parallel_batches() -> None:
    rollout = Rollout(fleet(10), RolloutPolicy(canary_fraction=0.2, parallel=3))
    assert rollout.stage is RolloutStage.CANARY
    assert rollout.start() == ["d0", "d1"]
    assert rollout.on_outcome("d0", Outcome.COMMITTED) == []  # the canary is not decided yet
    assert rollout.on_outcome("d1", Outcome.COMMITTED) == ["d2", "d3", "d4"]
    assert rollout.stage.value == "rest"
    assert rollout.on_outcome("d3", Outcome.COMMITTED) == ["d5"]
    assert rollout.pending == {"d2", "d4", "d5"}


def test_a_canary_failure_halts_and_in_flight_devices_still_report() -> None:
    rollout = Rollout(fleet(10), RolloutPolicy(canary_fraction=0.3, parallel=2))
    assert rollout.start() == ["d0", "d1"]
    assert rollout.on_outcome("d0", Outcome.TIMED_OUT) == []
    assert rollout.stage is RolloutStage.HALTED
    assert rollout.halted_reason == "canary: 1 of 3 devices failed (1 decided; the limit is 0%)"
    assert not rollout.finished
    assert rollout.on_outcome("d1", Outcome.COMMITTED) == []
    assert rollout.finished and dict(rollout.results) == {"d0": Outcome.TIMED_OUT, "d1": Outcome.COMMITTED}
    assert rollout.summary()["not_offered"] == ["d2", *fleet(10)[3:]]


def test_the_threshold_tolerates_failures_up_to_the_fraction() -> None:
    rollout = Rollout(fleet(4), RolloutPolicy(canary_fraction=1.0, max_failure_fraction=0.25, parallel=4))
    rollout.start()
    rollout.on_outcome("d0", Outcome.FAILED)  # 1 of 4 = 25%: not more than the limit
    assert rollout.stage is RolloutStage.CANARY
    rollout.on_outcome("d1", Outcome.FAILED)
    assert rollout.stage.value == "halted"


def test_canary_fraction_one_has_no_second_stage() -> None:
    rollout = Rollout(fleet(3), RolloutPolicy(canary_fraction=1.0, parallel=5))
    assert rollout.start() == fleet(3)
    for device in fleet(3):
        rollout.on_outcome(device, Outcome.COMMITTED)
    assert rollout.stage is RolloutStage.DONE and rollout.rest == ()


def test_outcomes_are_checked() -> None:
    rollout = Rollout(fleet(4), RolloutPolicy(canary_fraction=0.5, parallel=1))
    rollout.start()
    with pytest.raises(ValueError, match="not offered"):
        rollout.on_outcome("d3", Outcome.COMMITTED)
    with pytest.raises(ValueError, match="not offered"):
        rollout.on_outcome("stranger", Outcome.COMMITTED)
    assert rollout.on_outcome("d0", Outcome.COMMITTED) == ["d1"]
    assert rollout.on_outcome("d0", Outcome.FAILED) == []  # a repeat is ignored, not re-judged
    assert rollout.results["d0"] is Outcome.COMMITTED
    with pytest.raises(TypeError):
        rollout.on_outcome("d1", "committed")  # type: ignore[arg-type]


def test_an_empty_fleet_is_done_at_once() -> None:
    rollout = Rollout([], RolloutPolicy())
    assert rollout.start() == [] and rollout.stage is RolloutStage.DONE and rollout.finished


def test_devices_must_be_unique() -> None:
    with pytest.raises(ValueError, match="more than once: a"):
        Rollout(["a", "b", "a"], RolloutPolicy())
    with pytest.raises(TypeError):
        Rollout("abc", RolloutPolicy())


@pytest.mark.parametrize("kwargs", [
    {"canary_fraction": 0}, {"canary_fraction": 1.5}, {"max_failure_fraction": -0.1},
    {"max_failure_fraction": 2}, {"parallel": 0}, {"parallel": 2.0}, {"canary_fraction": True},
])
def test_policy_is_checked(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RolloutPolicy(**kwargs)  # type: ignore[arg-type]


def test_outcome_of_phase() -> None:
    assert outcome_of(Phase.COMMITTED) is Outcome.COMMITTED
    assert {outcome_of(p) for p in (Phase.ROLLED_BACK, Phase.REFUSED, Phase.FAILED)} == {Outcome.FAILED}
    assert {outcome_of(p) for p in (Phase.OFFERED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.INSTALLING,
                                    Phase.TRIAL)} == {None}
