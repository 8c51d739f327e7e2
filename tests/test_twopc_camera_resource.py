"""The agent's camera-move resource and its payloads, without a broker (the runner is a stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.camera.assignments import CameraAssignments
from agents.camera.move_resource import CameraMoveResource
from protocols.twopc import Outcome
from protocols.twopc.camera_work import (
    ReleaseCamera,
    TakeCamera,
    decode_camera_work,
    encode_camera_work,
)
from schemas.errors import ConfigError, StorageError, TxError


class Runner:
    def __init__(self, running: list[str]) -> None:
        self.running = list(running)
        self.events: list[str] = []

    @property
    def cameras(self) -> list[str]:
        return sorted(self.running)

    def check_table(self, table: dict[str, object]) -> None:
        if "source" not in table:
            raise ConfigError("camera needs a source")

    def start_camera(self, table: dict[str, object]) -> None:
        self.running.append(str(table["name"]))
        self.events.append(f"start {table['name']}")

    def stop_camera(self, camera: str) -> None:
        self.running.remove(camera)
        self.events.append(f"stop {camera}")


def _resource(tmp_path: Path, running: list[str]) -> tuple[CameraMoveResource, Runner, CameraAssignments]:
    runner = Runner(running)
    assignments = CameraAssignments(tmp_path / "assignments.json")
    return CameraMoveResource(runner, assignments, tmp_path / "prepared"), runner, assignments


def test_payloads_round_trip_and_bad_ones_say_why() -> None:
    assert decode_camera_work(encode_camera_work(ReleaseCamera("door"))) == ReleaseCamera("door")
    take = decode_camera_work(encode_camera_work(TakeCamera("door", {"source": "rtsp://x"})))
    assert isinstance(take, TakeCamera) and take.table["source"] == "rtsp://x"
    for bad, why in ((b"not json", "not JSON"), (b"[]", "JSON object"), (b"{}", "exactly one"),
                     (b'{"release": "a", "take": {}}', "exactly one"),
                     (b'{"v": 9, "release": "a"}', "version 9"),
                     (b'{"release": "a/b"}', "camera name"), (b'{"take": "door"}', "camera table")):
        with pytest.raises(TxError, match=why):
            decode_camera_work(bad)


def test_prepare_changes_nothing_until_the_decision(tmp_path: Path) -> None:
    res, runner, _ = _resource(tmp_path, ["door"])
    assert res.prepare("t1", encode_camera_work(ReleaseCamera("door")), 0).ok
    assert runner.cameras == ["door"] and runner.events == []
    assert list(res.prepared_ids()) == ["t1"]
    res.finish("t1", Outcome.ABORT)
    assert runner.cameras == ["door"] and list(res.prepared_ids()) == []


def test_commit_records_ownership_before_acting_and_repeats_are_done(tmp_path: Path) -> None:
    res, runner, assignments = _resource(tmp_path, [])
    assert res.prepare("t1", encode_camera_work(TakeCamera("door", {"source": "x"})), 0).ok
    res.finish("t1", Outcome.COMMIT)
    res.finish("t1", Outcome.COMMIT)  # a repeat after a crash: done
    assert runner.events == ["start door"]
    assert [t["name"] for t in assignments.cameras([])] == ["door"]
    # Durable: a new instance over the same files sees the ownership and no intent left.
    again = CameraAssignments(tmp_path / "assignments.json")
    assert [t["name"] for t in again.cameras([{"name": "gate"}])] == ["gate", "door"]
    res.prepare("t2", encode_camera_work(ReleaseCamera("door")), 0)
    res.finish("t2", Outcome.COMMIT)
    assert CameraAssignments(tmp_path / "assignments.json").cameras([{"name": "door"}]) == []


def test_refusals_name_the_reason(tmp_path: Path) -> None:
    res, _, _ = _resource(tmp_path, ["door"])
    assert res.prepare("t1", encode_camera_work(ReleaseCamera("gate")), 0).reason == \
        "camera gate is not running on this agent"
    assert res.prepare("t2", encode_camera_work(TakeCamera("door", {"source": "x"})), 0).reason == \
        "camera door already runs on this agent"
    assert res.prepare("t3", encode_camera_work(TakeCamera("gate", {})), 0).reason == \
        "camera gate: camera needs a source"
    assert res.prepare("t4", b"{", 0).reason.startswith("camera work is not JSON")
    assert res.prepare("t5", encode_camera_work(ReleaseCamera("door")), 0).ok
    assert res.prepare("t6", encode_camera_work(ReleaseCamera("door")), 0).reason == \
        "camera door is in transaction t5"
    # A restart keeps the hold: it is rebuilt from the intent files.
    again, _, _ = _resource(tmp_path, ["door"])
    assert again.prepare("t7", encode_camera_work(ReleaseCamera("door")), 0).reason == \
        "camera door is in transaction t5"
    assert list(again.prepared_ids()) == ["t5"]


def test_an_unreadable_assignments_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "assignments.json").write_text("{oops")
    with pytest.raises(StorageError, match=r"assignments\.json"):
        CameraAssignments(tmp_path / "assignments.json")
