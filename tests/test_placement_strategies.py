"""Hypothesis strategies for the placement tests, and tests that they reach the cases that matter.

Loads, capacities and demands are drawn from short lists, so ties between
agents, loads exactly at a threshold, and full memory happen often; agents go
offline, work is unowned or owned by an agent that is gone, moves are in
flight, recent moves eat the budget, and the operator pins, cordons and drains.
The strategies are built once at import: hypothesis validates every strategy
object it is handed, which made building them per draw the slowest part.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.placement import (
    AgentCapacity,
    AgentLoad,
    AgentView,
    Assignment,
    MoveReason,
    MoveRecord,
    MoveState,
    OperatorControls,
    Placement,
    PlanInput,
    Planner,
    PlannerConfig,
    Workload,
)

AGENTS = tuple(f"gw-{i}" for i in range(6))
GONE = "gw-gone"  # an agent the placement names but the coordinator no longer knows

_CORES = st.sampled_from((2.0, 4.0, 8.0))
_MEMORY = st.sampled_from((512, 1024, 2048, 4096, 16384))
_ROOMY_MEMORY = st.sampled_from((8192, 16384))
_ACCELERATORS = st.sampled_from((0, 0, 1))
_SSD_FPS = st.sampled_from((20.0, 60.0, 200.0))
_YOLO_FPS = st.sampled_from((None, None, 10.0, 90.0))
_TX_CAPACITY = st.sampled_from((20.0, 100.0))
_CPU_SHARE = st.sampled_from((0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.85, 0.9, 1.2))
_MEMORY_SHARE = st.sampled_from((0.0, 0.1, 0.2, 0.4, 0.95))
_TX = st.sampled_from((0.0, 10.0, 50.0))
_FORECAST = st.sampled_from((None, None, None, 0.2, 0.9, 1.2))
_ONLINE = st.sampled_from((True, True, True, False))
_AGE = st.sampled_from((0, 5_000, 20_000, 100_000, 10**6))  # how long ago, in ms
_BACKEND = st.sampled_from((None, "ssd", "ssd", "yolo"))
_REACH = st.sampled_from((None, None, None, frozenset(AGENTS[:2]), frozenset(AGENTS[1:4]),
                          frozenset(AGENTS[3:])))
_WORK_CPU = st.sampled_from((0.0, 0.1, 0.25, 0.5, 1.0, 2.0))
_WORK_MEMORY = st.sampled_from((0, 100, 300, 700, 1500))
_ROOMY_WORK_MEMORY = st.sampled_from((0, 100, 300))
_FPS = st.sampled_from((0.0, 5.0, 15.0))
_PRIORITY = st.sampled_from((0, 0, 1, 2))
_REASON = st.sampled_from(tuple(MoveReason))
_ENDED = st.sampled_from((MoveState.COMMITTED, MoveState.ABORTED))
_PIN = st.sampled_from((None, None, None, None, None, frozenset(AGENTS[:1]), frozenset(AGENTS[2:5])))
_SMALL = st.integers(0, 3)
_BOOL = st.booleans()


@st.composite
def planner_configs(draw: st.DrawFn) -> PlannerConfig:
    cpu = draw(st.sampled_from((0.4, 0.6, 1.0)))
    knobs = draw(st.tuples(st.sampled_from((0.7, 0.85)), st.sampled_from((0.0, 0.1, 0.3)),
                           st.sampled_from((0.0, 0.02, 0.1)), st.sampled_from((0, 60_000)),
                           st.sampled_from((0, 1, 3, 10)), st.sampled_from((0, 2_000)),
                           st.sampled_from((0, 10_000))))
    return PlannerConfig(cpu_weight=cpu, memory_weight=(1 - cpu) / 2, tx_weight=(1 - cpu) / 2,
                         overload_cpu=knobs[0], rebalance_tolerance=knobs[1], hysteresis=knobs[2],
                         min_dwell_ms=knobs[3], move_budget=knobs[4], settle_ms=knobs[5],
                         evacuate_after_ms=knobs[6])


_CONFIGS = planner_configs()


def _agent(draw: st.DrawFn, agent: str, now: int, roomy: bool) -> AgentView:
    memory = draw(_ROOMY_MEMORY if roomy else _MEMORY)
    accelerators = draw(_ACCELERATORS)
    fps = {"ssd": draw(_SSD_FPS)}
    yolo = draw(_YOLO_FPS)
    if yolo is not None or accelerators:
        fps["yolo"] = yolo or 90.0
    capacity = AgentCapacity(draw(_CORES), memory, accelerators, fps, draw(_TX_CAPACITY),
                             memory // 8 if draw(_BOOL) else 0)
    load = AgentLoad(measured_ms=max(0, now - draw(_AGE) // 5), cpu_share=draw(_CPU_SHARE),
                     memory_share=draw(_MEMORY_SHARE), tx_per_s=draw(_TX), forecast_cpu_share=draw(_FORECAST))
    return AgentView(agent, capacity, load, draw(_ONLINE), max(0, now - draw(_AGE)))


def _workload(draw: st.DrawFn, wid: str, roomy: bool) -> Workload:
    backend = draw(_BACKEND)
    return Workload(wid, draw(_WORK_CPU), draw(_ROOMY_WORK_MEMORY if roomy else _WORK_MEMORY), draw(_FPS),
                    backend=backend, needs_accelerator=backend == "yolo" and draw(_BOOL),
                    reachable_from=draw(_REACH), priority=draw(_PRIORITY),
                    tx_per_s=1.0 if draw(_BOOL) else 0.0)


@st.composite
def plan_cases(draw: st.DrawFn, roomy: bool = False) -> tuple[PlanInput, PlannerConfig]:
    """A (view, config) pair: up to 6 agents and 12 workloads, anything goes."""
    now = draw(st.sampled_from((0, 30_000, 300_000)))
    agents = [_agent(draw, a, now, roomy) for a in AGENTS[: draw(st.integers(1, len(AGENTS)))]]
    ws = [_workload(draw, f"cam-{i}", roomy) for i in range(draw(st.integers(0, 12)))]
    ids = AGENTS[: len(agents)]
    owners = st.sampled_from((None, *ids, *ids, *ids, GONE))
    calm = draw(_BOOL)  # no move in flight, and the recent ones settled: voluntary moves happen
    placement: dict[str, Assignment] = {}
    records: list[MoveRecord] = []
    for w in ws:
        owner = draw(owners)
        if owner is not None:
            placement[w.id] = Assignment(owner, max(0, now - draw(_AGE)))
        if not calm and draw(st.integers(0, 7)) == 0:  # a move of it in flight
            target = draw(st.sampled_from(tuple(a for a in (*ids, GONE) if a != owner)))
            records.append(MoveRecord(w.id, owner, target, draw(_REASON), max(0, now - draw(_AGE) // 5)))
    for _ in range(draw(_SMALL) if ws else 0):  # recent moves that ended, and eat the budget
        a, b = draw(owners), draw(owners)
        if a == b or b is None:
            continue
        start = max(0, now - draw(_AGE) // 2)
        end = start if calm else min(now, start + draw(_AGE) // 5)
        if calm:
            start, end = max(0, now - 59_000), max(0, now - 50_000)
        moved = draw(st.sampled_from(ws)).id
        records.append(MoveRecord(moved, a, b, draw(_REASON), start, draw(_ENDED), end))
    pins = {w.id: pin for w in ws if (pin := draw(_PIN)) is not None}
    cordoned = frozenset(a for a in ids if draw(st.integers(0, 5)) == 0)
    drained = frozenset(a for a in ids[:2] if draw(st.integers(0, 3)) == 0)
    inp = PlanInput(now, tuple(agents), tuple(ws), Placement(placement), tuple(records),
                    OperatorControls(pins, cordoned, drained))
    return inp, draw(_CONFIGS)


@st.composite
def balancing_cases(draw: st.DrawFn) -> tuple[PlanInput, PlannerConfig]:
    """Every agent online and settled, every workload placed, loads that follow the work: the balancer's turf.

    Some workloads arrived too recently to move (dwell), and some recent moves
    have eaten part of the budget.
    """
    now = 600_000
    n = draw(st.integers(2, len(AGENTS)))
    ws = [_workload(draw, f"cam-{i}", roomy=True) for i in range(draw(st.integers(2, 12)))]
    owners = st.sampled_from(AGENTS[:n])
    owner = {w.id: draw(owners) for w in ws}
    agents = []
    for a in AGENTS[:n]:
        cores, memory = draw(_CORES), draw(_ROOMY_MEMORY)
        mine = [w for w in ws if owner[w.id] == a]
        load = AgentLoad(measured_ms=now,
                         cpu_share=(0.05 if draw(_BOOL) else 0.0) + sum(w.cpu_cores for w in mine) / cores,
                         memory_share=0.1 + sum(w.memory_mb for w in mine) / memory,
                         tx_per_s=sum(w.tx_per_s for w in mine),
                         forecast_cpu_share=draw(st.sampled_from((None, None, 0.95))))
        capacity = AgentCapacity(cores, memory, 1, {"ssd": 200.0, "yolo": 90.0}, 100.0)
        agents.append(AgentView(a, capacity, load))
    placement = Placement({w.id: Assignment(owner[w.id], 0 if draw(_BOOL) else now - 30_000) for w in ws})
    used = [MoveRecord(ws[0].id, "gw-0", "gw-1", MoveReason.REBALANCE, now - 59_000, MoveState.COMMITTED,
                       now - 57_000) for _ in range(draw(st.integers(0, 2)))]
    return PlanInput(now, tuple(agents), tuple(ws), placement, tuple(used)), draw(_CONFIGS)


# ---- the strategies reach the cases that matter ---------------------------------------------

FAST = settings(deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
Case = tuple[PlanInput, PlannerConfig]


def test_the_generated_fleets_exercise_every_kind_of_move() -> None:
    seen: set[str] = set()

    @settings(FAST, max_examples=200)
    @given(st.one_of(plan_cases(), balancing_cases()))
    def collect(case: Case) -> None:
        seen.update(m.reason.value for m in Planner(case[1]).plan(case[0]).moves)

    collect()
    assert seen == {"place", "evacuate", "drain", "pin", "relieve", "rebalance"}
