"""The planner on hand-made fleets: each rule doing its job, with the reason it gives."""

from __future__ import annotations

from typing import Any

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
    PlannerConfig,
    Workload,
    bottleneck_advice,
    plan,
    rank_bottlenecks,
)
from protocols.placement.baselines import greedy_plan, static_plan

NOW = 600_000


def agent(name: str, cpu: float = 0.2, *, cores: float = 4, memory_mb: int = 4096, accelerators: int = 0,
          online: bool = True, since_ms: int = 0, measured_ms: int = NOW, **load: Any) -> AgentView:
    return AgentView(name, AgentCapacity(cores, memory_mb, accelerators, {"ssdlite": 100.0}),
                     AgentLoad(measured_ms=measured_ms, cpu_share=cpu, **load), online, since_ms)


def cam(name: str, cpu: float = 0.4, memory_mb: int = 200, **kw: Any) -> Workload:
    return Workload(name, cpu_cores=cpu, memory_mb=memory_mb, fps=8, backend="ssdlite", **kw)


def view(agents: list[AgentView], work: list[Workload], owners: dict[str, str], *, since_ms: int = 0,
         moves: tuple[MoveRecord, ...] = (), controls: OperatorControls | None = None) -> PlanInput:
    return PlanInput(NOW, tuple(agents), tuple(work), Placement.of(owners, since_ms), moves,
                     controls or OperatorControls())


def test_an_overloaded_agent_sheds_work_to_an_idle_one_and_says_why() -> None:
    inp = view([agent("gw-1", 0.1), agent("gw-3", 0.94)],
               [cam("door", 1.2), cam("yard", 1.2), cam("gate", 1.2)],
               {"door": "gw-3", "yard": "gw-3", "gate": "gw-3"})
    p = plan(inp)
    relieve = [m for m in p.moves if m.reason is MoveReason.RELIEVE]
    assert relieve and all(m.source == "gw-3" and m.target == "gw-1" for m in relieve)
    assert "gw-3: CPU at 94% (limit 85%)" in relieve[0].detail
    assert relieve[0].gain is not None and relieve[0].gain > PlannerConfig().hysteresis


def test_a_forecast_over_the_threshold_moves_work_before_the_overload() -> None:
    agents = [agent("gw-1", 0.1), agent("gw-2", 0.5, forecast_cpu_share=0.95)]
    inp = view(agents, [cam("door", 1.0), cam("yard", 1.0)], {"door": "gw-2", "yard": "gw-2"})
    moves = plan(inp, PlannerConfig(rebalance_tolerance=1.0)).moves
    assert [m.reason for m in moves] == [MoveReason.RELIEVE]
    assert "forecast to reach 95%" in moves[0].detail
    calm = view([agent("gw-1", 0.1), agent("gw-2", 0.5)], [cam("door", 1.0), cam("yard", 1.0)],
                {"door": "gw-2", "yard": "gw-2"})
    assert plan(calm, PlannerConfig(rebalance_tolerance=1.0)).moves == ()


def test_hysteresis_holds_back_a_move_that_gains_too_little() -> None:
    inp = view([agent("gw-1", 0.3), agent("gw-2", 0.4)], [cam("door", 0.1)], {"door": "gw-2"})
    assert plan(inp, PlannerConfig(rebalance_tolerance=0.0, hysteresis=0.2)).moves == ()
    assert [m.reason for m in plan(inp, PlannerConfig(rebalance_tolerance=0.0, hysteresis=0.0)).moves] == [
        MoveReason.REBALANCE]


def test_work_that_just_arrived_stays_for_its_dwell_time() -> None:
    agents = [agent("gw-1", 0.1), agent("gw-3", 0.94)]
    inp = view(agents, [cam("door", 1.2)], {"door": "gw-3"}, since_ms=NOW - 30_000)
    assert plan(inp, PlannerConfig(min_dwell_ms=60_000)).moves == ()
    assert len(plan(inp, PlannerConfig(min_dwell_ms=30_000)).moves) == 1


def test_an_agent_whose_last_move_is_not_yet_measured_is_left_to_settle() -> None:
    agents = [agent("gw-1", 0.1, measured_ms=NOW - 1_000), agent("gw-3", 0.94), agent("gw-4", 0.2),
              agent("gw-5", 0.05)]
    done = MoveRecord("gate", "gw-5", "gw-1", MoveReason.RELIEVE, NOW - 3_000, MoveState.COMMITTED,
                      NOW - 1_500)
    inp = view(agents, [cam("door", 1.2), cam("gate", 0.2)], {"door": "gw-3", "gate": "gw-1"}, moves=(done,))
    assert [(m.source, m.target) for m in plan(inp).moves] == [("gw-3", "gw-4")]


def test_new_work_goes_to_the_best_agent_and_counts_moves_its_measurement_misses() -> None:
    # gw-1 looks idle, but a move onto it finished after its last measurement
    agents = [agent("gw-1", 0.1, measured_ms=NOW - 5_000), agent("gw-2", 0.3)]
    landed = MoveRecord("yard", "gw-2", "gw-1", MoveReason.RELIEVE, NOW - 4_000, MoveState.COMMITTED,
                        NOW - 2_000)
    inp = view(agents, [cam("door", 0.4), cam("yard", 2.0)], {"yard": "gw-1"}, moves=(landed,))
    assert [(m.workload, m.reason, m.target) for m in plan(inp).moves] == [("door", MoveReason.PLACE, "gw-2")]


def test_the_work_of_an_offline_agent_waits_out_the_grace_period_then_moves() -> None:
    work, owners = [cam("door")], {"door": "gw-2"}
    brief = view([agent("gw-1"), agent("gw-2", online=False, since_ms=NOW - 5_000)], work, owners)
    assert plan(brief).moves == ()
    gone = view([agent("gw-1"), agent("gw-2", online=False, since_ms=NOW - 20_000)], work, owners)
    [move] = plan(gone).moves
    assert (move.reason, move.source, move.target) == (MoveReason.EVACUATE, "gw-2", "gw-1")
    assert move.detail.startswith("gw-2 offline for 20 s")
    unknown = view([agent("gw-1")], work, owners)
    assert plan(unknown).moves[0].detail.startswith("gw-2 is unknown")


def test_hard_limits_name_why_work_cannot_be_placed() -> None:
    agents = [agent("gw-1", memory_mb=1024), agent("gw-2", online=False), agent("gw-3")]
    work = [cam("big", memory_mb=2048, reachable_from=frozenset({"gw-1", "gw-2"})),
            Workload("yolo", cpu_cores=0.5, memory_mb=100, fps=5, backend="yolov8n", needs_accelerator=True)]
    p = plan(view(agents, work, {}, controls=OperatorControls(cordoned=frozenset({"gw-3"}))))
    reasons = {b.workload: b.reason for b in p.unplaced}
    assert p.moves == ()
    assert "offline: gw-2" in reasons["big"] and "cordoned: gw-3" in reasons["big"]
    assert "not enough memory for its 2048 MB (at most 1024 MB free): gw-1" in reasons["big"]
    assert "has no accelerator: gw-1" in reasons["yolo"] and "cordoned: gw-3" in reasons["yolo"]


def test_a_move_in_flight_reserves_memory_on_its_target_and_is_left_alone() -> None:
    agents = [agent("gw-1", memory_mb=1024), agent("gw-2", 0.95, memory_mb=8192)]
    flying = MoveRecord("door", "gw-2", "gw-1", MoveReason.RELIEVE, NOW - 1_000)
    inp = view(agents, [cam("door", 1.0, memory_mb=800), cam("new", 0.1, memory_mb=800)], {"door": "gw-2"},
               moves=(flying,))
    p = plan(inp)
    assert all(m.workload != "door" for m in p.moves)
    assert [(m.workload, m.target) for m in p.moves] == [("new", "gw-2")]


def test_a_cordoned_agent_takes_nothing_new_and_keeps_its_work() -> None:
    inp = view([agent("gw-1", 0.1), agent("gw-2", 0.3)], [cam("door"), cam("new")], {"door": "gw-2"},
               controls=OperatorControls(cordoned=frozenset({"gw-1"})))
    assert [(m.workload, m.target) for m in plan(inp).moves] == [("new", "gw-2")]


def test_a_drained_agent_is_emptied_at_the_budget_pace() -> None:
    work = [cam(f"c{i}", 0.2, priority=i % 2) for i in range(5)]
    controls = OperatorControls(drained=frozenset({"gw-2"}))
    owners = {w.id: "gw-2" for w in work}
    inp = view([agent("gw-1", 0.1), agent("gw-2", 0.4)], work, owners, controls=controls)
    p = plan(inp, PlannerConfig(move_budget=3))
    assert [m.reason for m in p.moves] == [MoveReason.DRAIN] * 3 and p.budget_exhausted
    assert [m.workload for m in p.moves] == ["c1", "c3", "c0"]  # higher priority first
    earlier = tuple(MoveRecord.start(m, NOW - 10_000).finish(True, NOW - 8_000) for m in p.moves)
    rest = view([agent("gw-1", 0.1), agent("gw-2", 0.4)], work, {w.id: "gw-2" for w in work},
                moves=earlier, controls=controls)
    assert plan(rest, PlannerConfig(move_budget=3)).moves == ()
    assert len(plan(rest, PlannerConfig(move_budget=5)).moves) == 2


def test_a_workload_pinned_elsewhere_moves_to_its_pinned_agents() -> None:
    inp = view([agent("gw-1"), agent("gw-2"), agent("gw-3", 0.0)], [cam("door")], {"door": "gw-1"},
               controls=OperatorControls().pin("door", ["gw-2"]))
    [move] = plan(inp).moves
    assert (move.reason, move.target) == (MoveReason.PIN, "gw-2")
    assert move.detail == "gw-1 not among its pinned agents"


def test_rebalancing_narrows_the_spread_of_utilisation_across_boxes_of_different_sizes() -> None:
    work = [cam(f"c{i}", 0.5) for i in range(6)]
    agents = [agent("gw-1", 0.05 + 6 * 0.5 / 4), agent("gw-2", 0.05, cores=8, memory_mb=16384)]
    inp = view(agents, work, {w.id: "gw-1" for w in work})
    p = plan(inp)
    assert {m.reason for m in p.moves} == {MoveReason.REBALANCE}
    assert all(m.target == "gw-2" for m in p.moves)
    moved = len(p.moves)
    share = {"gw-1": 0.05 + (6 - moved) * 0.5 / 4, "gw-2": 0.05 + moved * 0.5 / 8}
    assert abs(share["gw-1"] - share["gw-2"]) < 0.8 - 0.05  # narrower than before
    assert abs(share["gw-1"] - share["gw-2"]) <= 0.5 / 4 + 0.5 / 8  # within one camera's step


def test_the_baselines() -> None:
    work = [cam(f"c{i}", 0.5) for i in range(4)]
    inp = view([agent("gw-1", 0.55), agent("gw-2", 0.05)], work, {w.id: "gw-1" for w in work})
    assert static_plan(inp).moves == ()
    greedy = greedy_plan(inp)
    assert [m.target for m in greedy.moves] == ["gw-2", "gw-2"]


def test_bottleneck_ranking_and_advice() -> None:
    agents = [agent("gw-1", 0.1), agent("gw-3", 0.94, memory_share=0.3), agent("gw-9", 0.2, online=False)]
    inp = view(agents, [cam("door", 1.0), cam("yard", 2.0)], {"door": "gw-3", "yard": "gw-3"})
    ranking = rank_bottlenecks(inp.agents)
    assert [b.agent for b in ranking] == ["gw-3", "gw-1"]
    assert ranking[0].top == "cpu" and ranking[0].alarming and not ranking[1].alarming
    assert bottleneck_advice(inp) == "gw-3: CPU at 94% is the bottleneck; move camera door to gw-1"


def test_bottleneck_advice_when_nothing_or_nowhere() -> None:
    idle = view([agent("gw-1", 0.1), agent("gw-2", 0.3)], [cam("door")], {"door": "gw-2"})
    assert bottleneck_advice(idle) == "gw-2: CPU at 30% is its heaviest load; nothing is a bottleneck"
    alone = view([agent("gw-1", 0.95)], [cam("door")], {"door": "gw-1"})
    assert bottleneck_advice(alone) == ("gw-1: CPU at 95% is the bottleneck; "
                                        "no other agent has room for its work")
    locks = view([agent("gw-1", 0.1, lock_contention=0.9), agent("gw-2")], [], {})
    assert "lock contention at 90% is the bottleneck" in bottleneck_advice(locks)
    slow = view([agent("gw-1", 0.3, frames_in_per_s=40, frames_done_per_s=20, inference_ms=250)], [], {})
    top = rank_bottlenecks(slow.agents)[0]
    assert (top.top, top.top_text) == ("latency", "inference latency 250 ms")
    assert top.parts["throughput"] == 0.5


def test_the_plan_serialises_for_the_decision_log() -> None:
    inp = view([agent("gw-1", 0.1), agent("gw-3", 0.94)], [cam("door", 1.2)], {"door": "gw-3"})
    p = plan(inp)
    body = p.to_json()
    assert body["moves"][0]["reason"] == "relieve" and body["moves"][0]["target"] == "gw-1"
    assert "relieve: door gw-3 -> gw-1" in p.summary()
    assert plan(view([agent("gw-1")], [], {})).summary() == "nothing to do"


def test_assignments_since_drive_the_dwell_clock() -> None:
    inp = PlanInput(NOW, (agent("gw-1", 0.1), agent("gw-3", 0.94)), (cam("door", 1.2),),
                    Placement({"door": Assignment("gw-3", NOW - 59_999)}))
    assert plan(inp).moves == ()
