"""The placement binding's own logic without processes: config, the table, the fence, the store, the CLI text.

The real-process behaviour is tests/test_placement_fleet.py's; these pin the
rules it rests on (each with the case that once broke it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.camera.placement_fence import PlacementFence, cameras_to_drop
from broker.router import ReceivedMessage
from coordinator.config import CoordinatorConfig
from coordinator.placement.config import PlacementConfig
from coordinator.placement.control import format_table
from coordinator.placement.fleet import FleetState
from coordinator.placement.table import PlacementTable
from coordinator.store.base import open_store
from protocols.placement import Assignment, Move, MoveReason, MoveRecord, OperatorControls
from schemas.errors import ConfigError
from schemas.topics import TopicTree

CAM = {"source": "/frames", "fps": 2, "detector": {"type": "ssdlite"}}


def test_placement_is_off_without_its_table_and_strict_with_it() -> None:
    assert CoordinatorConfig.from_mapping({}).placement is None
    door_table = {**CAM, "cpu_cores": 0.5, "agents": ["gw-1"]}
    config = CoordinatorConfig.from_mapping({"placement": {"group": "bal", "move_budget": 4,
                                                           "cameras": {"door": door_table}}})
    placement = config.placement
    assert placement is not None and placement.planner.move_budget == 4 and placement.interval_s == 2.0
    door = placement.cameras[0]
    assert door.table == {**CAM, "name": "door"}  # the hints stay with the coordinator
    workload = door.workload()
    assert workload.cpu_cores == 0.5 and workload.reachable_from == frozenset({"gw-1"}) and workload.fps == 2
    with pytest.raises(ConfigError, match=r"placement: unknown key 'move_budgt'; known keys: .*group"):
        PlacementConfig.from_mapping({"group": "bal", "move_budgt": 3})
    with pytest.raises(ConfigError, match=r"placement\.group is required"):
        PlacementConfig.from_mapping({"cameras": {}})
    with pytest.raises(ConfigError, match=r"placement\.cameras\.door: source is required"):
        PlacementConfig.from_mapping({"group": "bal", "cameras": {"door": {"fps": 2}}})
    with pytest.raises(ConfigError, match="hysteresis"):
        PlacementConfig.from_mapping({"group": "bal", "hysteresis": 2})


def test_the_table_follows_reports_but_stands_while_agents_apply_a_commit() -> None:
    table = PlacementTable()
    online = frozenset({"a", "b", "c"})
    table.observe(["cam"], {"a": frozenset({"cam"}), "b": frozenset(), "c": frozenset()}, online, 1000, 5000)
    assert table.owners["cam"] == Assignment("a", 1000)
    # The move a -> c committed; a has applied it, c not yet (its report is older than the decision).
    table.moved("cam", "a", "c", 2000, revoke=False)
    lagging: dict[str, frozenset[str]] = {"a": frozenset(), "b": frozenset(), "c": frozenset()}
    table.observe(["cam"], lagging, online, 3000, 5000)
    assert table.owners["cam"].agent == "c"  # not "no owner": that once let the planner place it twice
    table.observe(["cam"], lagging, online, 8000, 5000)
    assert "cam" not in table.owners  # past the grace its owner's word stands: it has no owner
    # An evacuation revokes the dead owner; its stale report is not ownership, and it clears once it drops it.
    table.moved("cam", "a", "b", 9000, revoke=True)
    reports = {"a": frozenset({"cam"}), "b": frozenset({"cam"}), "c": frozenset()}
    assert table.observe(["cam"], reports, frozenset({"b", "c"}), 20_000, 5000) == []
    assert table.owners["cam"].agent == "b" and table.revoked == {"cam": {"a"}}
    table.observe(["cam"], {**reports, "a": frozenset()}, online, 21_000, 5000)
    assert table.revoked == {}
    both = {**reports, "a": frozenset(), "c": frozenset({"cam"})}
    assert table.observe(["cam"], both, online, 40_000, 5000) == ["camera cam is reported by b, c"]
    # A standby without the retained table: a camera reported by a dead agent (stale) and a live one is the
    # live one's, never unowned (placing it afresh would start it beside the live one).
    fresh = PlacementTable()
    fresh.observe(["cam"], {"a": frozenset({"cam"}), "b": frozenset({"cam"})}, frozenset({"b"}), 50_000, 5000)
    assert fresh.owners["cam"].agent == "b"


def test_the_table_round_trips_and_a_standby_reads_it() -> None:
    table = PlacementTable(token=3)
    table.moved("cam", None, "b", 100, revoke=False)
    table.moves.append(MoveRecord.start(Move("cam", None, "b", MoveReason.PLACE), 100))
    table.decide({"kind": "takeover", "detail": "x"})
    body = json.loads(json.dumps(table.to_json("bal", "coord-1", 200, OperatorControls().to_json())))
    again = PlacementTable.from_json(body)
    assert again.owners == table.owners and again.moves == table.moves and again.token == 3
    with pytest.raises(ValueError, match="malformed"):
        PlacementTable.from_json({"owners": {"cam": {"agent": "b"}}})
    shown = format_table(body, OperatorControls().drain("gw-2"), now_ms=1200)
    assert "placer coord-1 (token 3)" in shown and "  b: cam" in shown and "drained gw-2" in shown


def test_the_fleet_is_not_planned_until_every_camera_agent_is_known() -> None:
    from schemas.birth import Capacity
    from schemas.messages import Birth, encode_record

    fleet = FleetState()
    birth = Birth(device="gw-1", epoch=1, agent_version="1", time_ms=1, capabilities=("cameras",),
                  capacity=Capacity(cores=4, memory_mb=2048))
    fleet.on_birth("gw-1", encode_record(birth))
    fleet.on_status("gw-1", b"online", 10)
    snap = fleet.snapshot()
    assert snap.unknown == ("gw-1",) and snap.unmeasured == ("gw-1",)  # no state/cameras, no load yet
    fleet.on_cameras("gw-1", b'{"cameras": ["door"]}')
    fleet.on_cameras("gw-2", b'{"cameras": ["yard"]}')  # a report from an agent whose birth is unknown
    assert fleet.snapshot().unknown == ("gw-2",)
    fleet.on_cameras("gw-1", b"not json")  # lenient: ignored, the last good report stands
    assert fleet.snapshot().reported["gw-1"] == frozenset({"door"})
    view = fleet.snapshot().agents[0]
    assert view.id == "gw-1" and view.capacity.cores == 4 and view.online


def test_cameras_to_drop() -> None:
    table = {"owners": {"a": {"agent": "me"}, "b": {"agent": "other"}}, "revoked": {"c": ["me"]}}
    assert cameras_to_drop(table, "me", ["a", "b", "c", "d"]) == ["b", "c"]
    assert cameras_to_drop(None, "me", ["a"]) == []


class _Session:
    """Just what the fence reads of a session: whether it is connected, and its subscriptions."""

    def __init__(self) -> None:
        self.topics = TopicTree("edgebus")
        self.is_connected = False
        self.handlers: list[Callable[[ReceivedMessage], None]] = []
        self.connect_listeners: list[Callable[[Any], None]] = []

    def subscribe(self, _topic: str, handler: Callable[[ReceivedMessage], None]) -> None:
        self.handlers.append(handler)

    def on_connect(self, listener: Callable[[Any], None]) -> None:
        self.connect_listeners.append(listener)

    def table(self, body: dict[str, Any]) -> None:
        for h in self.handlers:
            h(ReceivedMessage("edgebus/_sys/placement/bal/table", json.dumps(body).encode(), 1, True))


class _Host:
    def __init__(self, owned: list[str]) -> None:
        self.running: list[str] = []
        self.held = list(owned)

    def suspend(self) -> list[str]:
        self.held, self.running = sorted(self.held + self.running), []
        return self.held

    @property
    def suspended(self) -> list[str]:
        return list(self.held)

    def resume(self, drop: list[str]) -> None:
        self.running, self.held = [c for c in self.held if c not in drop], []

    @property
    def cameras(self) -> list[str]:
        return sorted(self.running + self.held)

    def stop_camera(self, camera: str) -> None:
        self.running.remove(camera)


def test_the_fence_runs_nothing_before_the_table_and_stops_everything_after_the_lease(tmp_path: Path) -> None:
    from agents.camera.assignments import CameraAssignments

    now = [0.0]
    session, host = _Session(), _Host(["door", "yard"])
    assignments = CameraAssignments(tmp_path / "camera-assignments.json")
    fence = PlacementFence(session, "bal", "gw-1", host, assignments, lease_s=3.0,  # type: ignore[arg-type]
                           table_wait_s=2.0, tick_s=0.01, clock=lambda: now[0])
    fence.start()
    try:
        def settle(predicate: Callable[[], bool], within: float = 10.0) -> bool:
            import time
            deadline = time.monotonic() + within
            while time.monotonic() < deadline and not predicate():
                time.sleep(0.01)
            return predicate()

        assert fence.fenced and host.running == []
        session.is_connected = True
        now[0] = 1.0
        session.table({"owners": {"yard": {"agent": "gw-2"}}})  # yard was moved away while we were down
        assert settle(lambda: not fence.fenced)
        assert host.running == ["door"]
        assert json.loads((tmp_path / "camera-assignments.json").read_text())["released"] == ["yard"]
        session.is_connected = False  # cut off: nothing happens before the lease...
        now[0] = 3.5
        assert not settle(lambda: fence.fenced, within=0.5) and host.running == ["door"]  # 50 ticks
        now[0] = 4.5  # ...and everything stops after it
        assert settle(lambda: fence.fenced) and host.running == []
        session.is_connected = True  # back: no table within table_wait_s means no placer; run again
        released_at = []

        def later() -> bool:  # the fake clock moves on while the fence waits for a table
            now[0] += 0.05
            if not fence.fenced:
                released_at.append(now[0])
            return not fence.fenced

        reconnected = now[0]
        assert settle(later) and host.running == ["door"]
        assert released_at[0] - reconnected >= 2.0  # it waited table_wait_s for a table first
        # A reconnect too short for the lease: the first table after it is checked against what runs.
        for listener in session.connect_listeners:
            listener(session)
        session.table({"owners": {"door": {"agent": "gw-3"}}})
        assert host.running == [] and "door" in json.loads(
            (tmp_path / "camera-assignments.json").read_text())["released"]
    finally:
        fence.stop()


def test_the_store_keeps_decisions(tmp_path: Path) -> None:
    store = open_store({}, data_dir=tmp_path)
    try:
        store.record_placement_decision({"time_ms": 5, "placer": "coord-1", "token": 2, "kind": "move",
                                         "workload": "door", "source": "gw-1", "target": "gw-2",
                                         "reason": "relieve", "outcome": "committed", "detail": "CPU at 95%"})
        store.record_placement_decision({"time_ms": 6, "placer": "coord-1", "token": 2, "kind": "takeover",
                                         "detail": "coord-1 places now"})
        latest = store.placement_decisions()
        assert [d["kind"] for d in latest] == ["takeover", "move"]
        assert latest[1]["reason"] == "relieve" and latest[1]["outcome"] == "committed"
    finally:
        store.close()
