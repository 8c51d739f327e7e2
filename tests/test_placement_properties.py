"""Property tests of the placement planner: hypothesis draws small fleets, every plan is judged.

The properties (protocols/placement/checks.py holds the checkers):

* no agent over a hard limit: every move's target is online, not cordoned or
  drained, may run the work (reach, pins, accelerator, detector backend), and
  its memory requests stay within its memory;
* every workload placed when capacity allows: precisely, let N be the work
  with no running owner that is not in flight, E(w) the agents that may take
  w apart from memory, free(a) an agent's memory minus its requests, and
  m_max the largest memory of N. If for every w in N, E(w) is not empty and
  sum(free(a), a in E(w)) >= sum(memory of the w' in N whose E(w') meets
  E(w)) + |E(w)| * m_max, then every w in N is placed (a greedy that always
  uses an agent that fits cannot fail then: when w fails, every agent of E(w)
  has less than m_max free, so more than the right-hand side's demand was
  placed there, which is impossible). On any input, work is left unplaced
  only when no agent could take it after the plan;
* no voluntary move that does not raise the score by more than the hysteresis,
  and none of work that has not dwelt its minimum time;
* the budgeted moves of the window ending now, recent and planned, stay within
  the budget (across consecutive plans: tests/test_placement_sim.py);
* the same inputs give the same plan, again and in any order;
* with budget left, nothing movable stays on a drained agent (that it ends with
  nothing: tests/test_placement_sim.py).

The broken planners at the end show each check catching the bug it exists for.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, assume, find, given, settings
from hypothesis import strategies as st

from protocols.placement import PlanInput, Planner, PlannerConfig
from protocols.placement.checks import PLAN_CHECKS, homeless, requested_memory
from protocols.placement.ledger import Ledger
from protocols.placement.planner import _Round
from protocols.placement.workload import Workload
from tests.test_placement_strategies import balancing_cases, plan_cases

FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.filter_too_much])
Case = tuple[PlanInput, PlannerConfig]
ANY_CASE = st.one_of(plan_cases(), balancing_cases())


def violations(case: Case, planner: type[Planner] = Planner) -> dict[str, list[str]]:
    inp, cfg = case
    plan = planner(cfg).plan(inp)
    return {name: check(inp, plan, cfg) for name, check in PLAN_CHECKS.items()}


@settings(FAST, max_examples=200)
@given(ANY_CASE)
def test_no_agent_over_a_hard_limit(case: Case) -> None:
    bad = violations(case)
    assert bad["hard_limits"] == [] and bad["well_formed"] == []


def capacity_allows(inp: PlanInput, cfg: PlannerConfig) -> bool:
    """The condition of the module docstring, computed without the planner."""
    need = homeless(inp, cfg)
    if not need:
        return True
    by_id = {w.id: w for w in inp.workloads}
    free = {a.id: a.capacity.memory_mb - m for a, m in zip(inp.agents, requested_memory(inp).values(),
                                                              strict=True)}
    eligible = {w: {a.id for a in inp.agents if _may_take(inp, by_id[w], a.id)} for w in need}
    m_max = max(by_id[w].memory_mb for w in need)
    for w in need:
        if not eligible[w]:
            return False
        meets = sum(by_id[x].memory_mb for x in need if eligible[x] & eligible[w])
        if sum(free[a] for a in eligible[w]) < meets + len(eligible[w]) * m_max:
            return False
    return True


def _may_take(inp: PlanInput, w: Workload, agent: str) -> bool:
    view = next(a for a in inp.agents if a.id == agent)
    cap = view.capacity
    return (view.online and agent not in inp.controls.cordoned and agent not in inp.controls.drained
            and (w.reachable_from is None or agent in w.reachable_from) and inp.controls.allows(w.id, agent)
            and (not w.needs_accelerator or cap.accelerators > 0)
            and (w.backend is None or w.backend in cap.detector_fps))


@settings(FAST, max_examples=150)
@given(plan_cases(roomy=True))
def test_every_workload_placed_when_capacity_allows(case: Case) -> None:
    inp, cfg = case
    assume(homeless(inp, cfg) and capacity_allows(inp, cfg))
    plan = Planner(cfg).plan(inp)
    assert plan.unplaced == ()
    assert set(homeless(inp, cfg)) <= {m.workload for m in plan.moves}


def test_the_capacity_condition_is_met_often_enough_to_mean_something() -> None:
    met = 0

    @settings(FAST, max_examples=200, derandomize=True)
    @given(plan_cases(roomy=True))
    def count(case: Case) -> None:
        nonlocal met
        met += bool(homeless(*case)) and capacity_allows(*case)

    count()
    assert met >= 40


@settings(FAST, max_examples=100)
@given(plan_cases())
def test_work_is_left_unplaced_only_when_no_agent_could_take_it(case: Case) -> None:
    assert violations(case)["complete"] == []


@settings(FAST, max_examples=200)
@given(balancing_cases())
def test_no_voluntary_move_within_the_hysteresis_or_the_dwell_time(case: Case) -> None:
    bad = violations(case)
    assert bad["hysteresis"] == [] and bad["dwell"] == []


@settings(FAST, max_examples=150)
@given(ANY_CASE)
def test_moves_in_the_window_stay_within_the_budget(case: Case) -> None:
    assert violations(case)["budget"] == []


def permuted(inp: PlanInput, rng: random.Random) -> PlanInput:
    return PlanInput(inp.now_ms, tuple(rng.sample(inp.agents, len(inp.agents))),
                     tuple(rng.sample(inp.workloads, len(inp.workloads))), inp.placement,
                     tuple(rng.sample(inp.moves, len(inp.moves))), inp.controls)


@settings(FAST, max_examples=100)
@given(ANY_CASE, st.randoms(use_true_random=False))
def test_the_same_inputs_give_the_same_plan(case: Case, rng: random.Random) -> None:
    inp, cfg = case
    planner = Planner(cfg)
    first = planner.plan(inp)
    assert planner.plan(inp) == first
    assert Planner(cfg).plan(permuted(inp, rng)) == first


@settings(FAST, max_examples=100)
@given(plan_cases())
def test_with_budget_left_nothing_movable_stays_on_a_drained_agent(case: Case) -> None:
    assert violations(case)["drain_progress"] == []


# ---- broken planners: each check catches the bug it exists for -------------------------------


class IgnoresMemory(Planner):
    def _refusal(self, led: Ledger, w: Workload, agent: str) -> str | None:
        why = super()._refusal(led, w, agent)
        return None if why is not None and why.endswith("MB free") else why


class IgnoresCordons(Planner):
    def _refusal(self, led: Ledger, w: Workload, agent: str) -> str | None:
        why = super()._refusal(led, w, agent)
        return None if why in ("cordoned", "draining") else why


class NoHysteresis(Planner):
    def _worth_it(self, gain: float) -> bool:
        return gain > -1.0


class NoDwell(Planner):
    def _dwelt(self, led: Ledger, workload: str) -> bool:
        return True


class NoBudget(Planner):
    def _budget_left(self, inp: PlanInput) -> int:
        return 1_000


class MovesInFlight(Planner):
    def _may_move(self, rnd: _Round, workload: str) -> bool:
        return workload not in rnd.moved


class PlacesOnePerPlan(Planner):
    """Gives up after the first homeless workload it places."""

    def _place_homeless(self, rnd: _Round) -> None:
        placed = len(rnd.moves)
        super()._place_homeless(rnd)
        del rnd.moves[placed + 1:]


class ForgetsDrains(Planner):
    def _drained(self, led: Ledger) -> frozenset[str]:
        return frozenset()


class InputOrderTies(Planner):
    """Breaks ties by the order the input listed the agents in."""

    def _agents(self, led: Ledger) -> list[str]:
        return [a.id for a in led.inp.agents]


class RotatingTies(Planner):
    """Keeps a counter between calls and breaks ties round-robin: a hidden state."""

    calls = 0

    def _agents(self, led: Ledger) -> list[str]:
        RotatingTies.calls += 1
        agents = list(led.agents)
        k = RotatingTies.calls % max(1, len(agents))
        return agents[k:] + agents[:k]


def counterexample(strategy: st.SearchStrategy[Case], broken: Callable[[Case], bool]) -> Case:
    """A case on which ``broken`` holds (hypothesis.errors.NoSuchExample fails the test if there is none).

    Not shrunk: the point is that the check catches the bug, and shrinking these cases is slow.
    """
    return find(strategy, broken, settings=settings(FAST, max_examples=2_000, phases=[Phase.generate]),
                random=random.Random(0))


@pytest.mark.parametrize(("planner", "check", "strategy"), [
    (IgnoresMemory, "hard_limits", plan_cases()),
    (IgnoresCordons, "hard_limits", plan_cases()),
    (NoHysteresis, "hysteresis", balancing_cases()),
    (NoDwell, "dwell", balancing_cases()),
    (NoBudget, "budget", ANY_CASE),
    (MovesInFlight, "well_formed", plan_cases()),
    (PlacesOnePerPlan, "complete", plan_cases()),
    (ForgetsDrains, "drain_progress", plan_cases()),
])
def test_each_check_catches_a_planner_broken_for_it(planner: type[Planner], check: str,
                                                     strategy: st.SearchStrategy[Case]) -> None:
    case = counterexample(strategy, lambda c: bool(violations(c, planner)[check]))
    assert violations(case)[check] == [], "the real planner keeps the property on the same case"


def flipped(inp: PlanInput) -> PlanInput:
    return PlanInput(inp.now_ms, inp.agents[::-1], inp.workloads, inp.placement, inp.moves, inp.controls)


def test_input_order_ties_are_caught_by_the_same_plan_property() -> None:
    def differs(case: Case) -> bool:
        inp, cfg = case
        return InputOrderTies(cfg).plan(inp) != InputOrderTies(cfg).plan(flipped(inp))

    inp, cfg = counterexample(ANY_CASE, differs)
    assert Planner(cfg).plan(inp) == Planner(cfg).plan(flipped(inp))


def test_hidden_state_is_caught_by_the_same_plan_property() -> None:
    def differs(case: Case) -> bool:
        planner = RotatingTies(case[1])
        return planner.plan(case[0]) != planner.plan(case[0])

    inp, cfg = counterexample(ANY_CASE, differs)
    assert Planner(cfg).plan(inp) == Planner(cfg).plan(inp)


