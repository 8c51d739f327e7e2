"""The placement model's records: they validate themselves, name the field that is wrong, and round-trip."""

from __future__ import annotations

import pytest

from protocols.placement import (
    AgentCapacity,
    AgentLoad,
    AgentView,
    Assignment,
    BottleneckConfig,
    Move,
    MoveReason,
    MoveRecord,
    MoveState,
    OperatorControls,
    Placement,
    PlanInput,
    PlannerConfig,
    Workload,
    WorkloadKind,
)
from schemas.errors import ConfigError


@pytest.mark.parametrize(("make", "names"), [
    (lambda: AgentCapacity(cores=0, memory_mb=1024), "capacity.cores"),
    (lambda: AgentCapacity(cores=4, memory_mb=1024, reserved_memory_mb=1024), "reserved_memory_mb"),
    (lambda: AgentCapacity(cores=4, memory_mb=1024, detector_fps={"ssd": -1.0}), "detector_fps['ssd']"),
    (lambda: AgentCapacity(cores=float("nan"), memory_mb=1024), "capacity.cores"),
    (lambda: AgentLoad(cpu_share=-0.1), "load.cpu_share"),
    (lambda: AgentLoad(lock_contention=1.5), "load.lock_contention"),
    (lambda: AgentView("bad id", AgentCapacity(4, 1024)), "agent id"),
    (lambda: Workload("door", cpu_cores=-1), "workload door: cpu_cores"),
    (lambda: Workload("door", memory_mb=1.5), "workload door: memory_mb"),  # type: ignore[arg-type]
    (lambda: Workload("door", reachable_from=frozenset()), "reachable_from is empty"),
    (lambda: Workload("door", reachable_from="gw-1"), "reachable_from"),  # type: ignore[arg-type]
    (lambda: Workload("door/1"), "workload id"),
    (lambda: Assignment("gw 1"), "assignment agent"),
    (lambda: Move("door", "gw-1", "gw-1", MoveReason.RELIEVE), "source and target are both gw-1"),
    (lambda: MoveRecord("door", "gw-1", "gw-2", MoveReason.DRAIN, 10, MoveState.COMMITTED), "finished_ms"),
    (lambda: MoveRecord("door", "gw-1", "gw-2", MoveReason.DRAIN, 10, MoveState.ABORTED, 5), "before"),
])
def test_a_bad_record_is_refused_naming_what_is_wrong(make: object, names: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        make()  # type: ignore[operator]
    assert names in str(err.value)


def test_a_workload_describes_itself_in_plain_words() -> None:
    assert Workload("door").describe() == "camera door"
    assert Workload("plates", kind=WorkloadKind.INFERENCE).describe() == "inference job plates"


def test_placement_round_trips_and_records_moves() -> None:
    p = Placement.of({"door": "gw-1", "yard": "gw-2"}, since_ms=100)
    assert Placement.from_json(p.to_json()) == p
    moved = p.moved("door", "gw-3", 5_000)
    assert (moved.agent_of("door"), moved.since("door"), moved.on("gw-1")) == ("gw-3", 5_000, ())
    assert moved.without("yard").owners() == {"door": "gw-3"}
    with pytest.raises(ValueError, match="'door'"):
        Placement.from_json({"door": {"agent": "gw-1"}})


def test_a_move_record_starts_in_flight_and_finishes_once() -> None:
    rec = MoveRecord.start(Move("door", "gw-1", "gw-2", MoveReason.RELIEVE), 1_000)
    assert rec.in_flight and rec.finished_ms is None
    done = rec.finish(committed=True, now_ms=3_000)
    assert (done.state, done.finished_ms, done.in_flight) == (MoveState.COMMITTED, 3_000, False)


def test_the_plan_input_refuses_inconsistent_views() -> None:
    a = AgentView("gw-1", AgentCapacity(4, 1024))
    with pytest.raises(ValueError, match="'gw-1' appears more than once"):
        PlanInput(0, (a, a), ())
    with pytest.raises(ValueError, match="workload 'door', which is not in workloads"):
        PlanInput(0, (a,), (), Placement.of({"door": "gw-1"}))
    rec = MoveRecord("door", "gw-1", "gw-2", MoveReason.DRAIN, 0)
    with pytest.raises(ValueError, match="more than one move in flight"):
        PlanInput(0, (a,), (Workload("door"),), moves=(rec, rec))


def test_planner_config_validates_and_names_the_field() -> None:
    assert PlannerConfig().move_budget == 10
    with pytest.raises(ConfigError, match="hysteresis must be in"):
        PlannerConfig(hysteresis=-0.1)
    with pytest.raises(ConfigError, match=r"must be 1, not 1\.1"):
        PlannerConfig(cpu_weight=0.5)
    with pytest.raises(ConfigError, match="move_budget must be an integer"):
        PlannerConfig(move_budget=2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="budget_window_ms must be >= 1"):
        PlannerConfig(budget_window_ms=0)


def test_planner_config_from_toml_refuses_unknown_keys() -> None:
    cfg = PlannerConfig.from_mapping({"move_budget": 4, "hysteresis": 0.05})
    assert (cfg.move_budget, cfg.hysteresis) == (4, 0.05)
    assert PlannerConfig.from_mapping(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match=r"coordinator\.placement: unknown key 'move_budgt'"):
        PlannerConfig.from_mapping({"move_budgt": 4}, where="coordinator.placement")
    with pytest.raises(ConfigError, match=r"coordinator\.placement: overload_cpu"):
        PlannerConfig.from_mapping({"overload_cpu": 2}, where="coordinator.placement")


def test_bottleneck_weights_are_validated() -> None:
    assert sum(BottleneckConfig().weights().values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="must sum to 1"):
        BottleneckConfig(latency=0.5)
    with pytest.raises(ConfigError, match="bottleneck: cpu must be >= 0"):
        BottleneckConfig(cpu=-0.2, latency=0.65)
    with pytest.raises(ConfigError, match="unknown key 'latncy'"):
        BottleneckConfig.from_mapping({"latncy": 0.25})


def test_operator_controls_round_trip_and_are_strict() -> None:
    c = OperatorControls().pin("door", ["gw-1"]).cordon("gw-2").drain("gw-3")
    assert OperatorControls.from_json(c.to_json()) == c
    assert c.unpin("door").uncordon("gw-2").undrain("gw-3") == OperatorControls()
    assert not c.takes_new_work("gw-2") and not c.takes_new_work("gw-3") and c.takes_new_work("gw-1")
    assert c.allows("door", "gw-1") and not c.allows("door", "gw-2") and c.allows("yard", "gw-2")
    with pytest.raises(ConfigError, match="unknown key 'drains'"):
        OperatorControls.from_json({"drains": ["gw-1"]})
    with pytest.raises(ConfigError, match="pins\\['door'\\] is empty"):
        OperatorControls(pins={"door": frozenset()})
    with pytest.raises(ConfigError, match="cordoned"):
        OperatorControls(cordoned=frozenset({"gw 1"}))
