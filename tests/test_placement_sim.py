"""The planner over simulated days: properties that need many plans in a row, and the baselines beside it.

Each run is one seed of protocols/placement/sim.py: a fleet of mixed agents
and camera streams on virtual time, load steps, hand-overs that drop frames.
Every plan of every run is judged by every checker of
protocols/placement/checks.py; across the run, no window of the budget holds
more budgeted moves than the budget, and a drained agent ends with nothing.
A failure prints the seed: ``run_fleet(seed, config)`` replays it exactly.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.placement import Planner
from protocols.placement.baselines import greedy_plan, static_plan
from protocols.placement.moves import MoveState
from protocols.placement.scenario import LoadStep, StepKind, build_fleet
from protocols.placement.sim import FleetSimConfig, SimReport, run_fleet
from tests.test_placement_properties import ForgetsDrains, NoBudget

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = FleetSimConfig(agents=10, streams=40, duration_ms=8 * 60_000)


def assert_run_ok(report: SimReport) -> None:
    assert report.ok, (f"seed {report.seed}: {dict(report.violations)}\n"
                       f"replay with protocols.placement.sim.run_fleet({report.seed}, <config>)")
    f = report.frames
    assert f.arrived == pytest.approx(f.processed + f.dropped_overload + f.dropped_handover + f.lost_outage)


@settings(FAST, max_examples=8)
@given(SEEDS)
def test_every_plan_of_a_simulated_day_keeps_every_property(seed: int) -> None:
    report = run_fleet(seed, SMALL)
    assert_run_ok(report)
    assert report.moves, "the day needed no move at all: the run proves nothing"
    assert report.max_budgeted_in_window() <= SMALL.planner.move_budget


@settings(FAST, max_examples=4)
@given(SEEDS)
def test_aborted_moves_leave_the_placement_alone_and_are_retried(seed: int) -> None:
    report = run_fleet(seed, replace(SMALL, abort_chance=0.3))
    assert_run_ok(report)
    aborted = [r for r in report.moves if r.state is MoveState.ABORTED]
    assert aborted
    assert all(report.placement.agent_of(r.workload) is not None for r in aborted)


def test_a_seed_replays_exactly() -> None:
    a, b = run_fleet(11, SMALL), run_fleet(11, SMALL)
    assert (a.moves, a.frames, a.cpu, a.placement) == (b.moves, b.frames, b.cpu, b.placement)


def drain_day(seed: int, agent: str, planner: type[Planner] = Planner) -> SimReport:
    # every stream may run on every agent (no site-only cameras, no YOLO), and memory is ample:
    # so the rest of the fleet can always take the drained agent's work
    cfg = replace(SMALL, duration_ms=5 * 60_000,
                  steps=(LoadStep(60_000, StepKind.DRAIN, (agent,)),))
    fleet = build_fleet(seed, cfg.agents, cfg.streams, restricted=0.0, yolo=0.0)
    return run_fleet(seed, cfg, planner(cfg.planner).plan, fleet)


@settings(FAST, max_examples=5)
@given(SEEDS, st.integers(1, 9))
def test_a_drained_agent_ends_with_nothing(seed: int, index: int) -> None:
    agent = f"gw-{index:02d}"
    report = drain_day(seed, agent)
    assert_run_ok(report)
    assert report.placement.on(agent) == ()
    assert not any(r.in_flight for r in report.moves)
    assert all(r.target != agent for r in report.moves if r.started_ms >= 60_000)


def test_a_planner_that_forgets_drains_is_caught() -> None:
    report = drain_day(3, "gw-02", ForgetsDrains)
    assert report.placement.on("gw-02") != ()
    assert report.violation_counts.get("drain_progress", 0) > 0


def test_a_planner_that_ignores_the_budget_is_caught_across_plans() -> None:
    report = run_fleet(5, SMALL, NoBudget(SMALL.planner).plan)
    assert report.violation_counts.get("budget_window", 0) == 1
    assert report.max_budgeted_in_window() > SMALL.planner.move_budget


def test_evacuated_work_lands_elsewhere_and_a_returning_agent_gets_work_back() -> None:
    cfg = replace(SMALL, duration_ms=6 * 60_000, steps=(
        LoadStep(60_000, StepKind.LEAVE, ("gw-03",)), LoadStep(180_000, StepKind.RETURN, ("gw-03",))))
    report = run_fleet(21, cfg)
    assert_run_ok(report)
    fleet = report.fleet
    owned = fleet.initial.on("gw-03")
    assert owned
    evacuated = [r for r in report.moves if r.reason == "evacuate"]
    assert {r.workload for r in evacuated} == set(owned)
    grace = cfg.planner.evacuate_after_ms + cfg.plan_every_ms
    assert all(60_000 + cfg.planner.evacuate_after_ms <= r.started_ms <= 60_000 + grace for r in evacuated)
    assert [r for r in report.moves if r.target == "gw-03" and r.started_ms >= 180_000]
    assert report.frames.lost_outage > 0


def test_the_balancer_beside_the_baselines_on_the_same_fleet() -> None:
    """The behaviour the benchmark measures, asserted as orderings on one seed's small fleet."""
    cfg = replace(SMALL, check_plans=False)
    fleet = build_fleet(2, cfg.agents, cfg.streams, duration_ms=cfg.duration_ms)
    balancer = run_fleet(2, cfg, None, fleet)
    static = run_fleet(2, cfg, static_plan, fleet)
    greedy = run_fleet(2, cfg, greedy_plan, fleet)
    crowd = fleet.steps[0].at_ms
    before = balancer.index_at(crowd - cfg.tick_ms)
    assert balancer.cv(before) < static.cv(before)
    assert static.moves == () and static.frames.dropped_overload > balancer.frames.dropped_overload
    assert len(greedy.moves) > len(balancer.moves)
    assert greedy.max_budgeted_in_window() > cfg.planner.move_budget >= balancer.max_budgeted_in_window()
    assert greedy.frames.dropped_handover > balancer.frames.dropped_handover


def test_the_standard_fleet_has_mixed_capacity_and_constraints() -> None:
    fleet = build_fleet(1)
    assert len(fleet.agents) == 50 and len(fleet.streams) == 200
    assert len({a.profile for a in fleet.agents}) >= 3
    assert any(w.needs_accelerator for w in fleet.streams) and any(w.reachable_from for w in fleet.streams)
    assert set(fleet.initial.assignments) == {w.id for w in fleet.streams}
    assert [s.kind for s in fleet.steps] == [
        StepKind.HOTSPOT, StepKind.LEAVE, StepKind.RETURN, StepKind.HOTSPOT, StepKind.HOTSPOT_END]


SLOW_SEEDS, SLOW_CHUNK = 40, 8  # full-size days (50 agents, 200 streams), in chunks well inside the timeout


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, SLOW_SEEDS, SLOW_CHUNK))
def test_many_full_size_days(start: int) -> None:
    for seed in range(1_000 + start, 1_000 + start + SLOW_CHUNK):
        report = run_fleet(seed, FleetSimConfig())
        assert_run_ok(report)
        assert report.max_budgeted_in_window() <= report.config.planner.move_budget
