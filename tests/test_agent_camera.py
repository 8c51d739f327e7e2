"""A camera agent end to end: real photographs in, person events out, on real brokers."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from schemas.command import Command
from schemas.messages import Birth, DetectionsBatch, decode_record, encode_record
from tests.agent_helpers import agent_toml, reap_agent, spawn_agent, stop_agent
from tests.brokers import RunningBroker
from tests.bus_helpers import Inbox, observer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "tests" / "data" / "photos"
DEVICE = "cam-t"


def scene(folder: Path) -> Path:
    """Someone walks into view for 8 frames, then an empty table for 8 frames."""
    folder.mkdir()
    for i in range(16):
        photo = "astronaut.jpg" if i < 8 else "coffee.jpg"
        shutil.copy(PHOTOS / photo, folder / f"{i:03d}.jpg")
    return folder


def frames_seen(inbox: Inbox) -> int:
    batches = [decode_record(p) for p in inbox.payloads(f"edgebus/{DEVICE}/detections/door")]
    return sum(len(b.frames) for b in batches if isinstance(b, DetectionsBatch))


def test_camera_agent_publishes_person_events_and_detections(broker: RunningBroker,
                                                             tmp_path: Path) -> None:
    config = agent_toml(broker, tmp_path, DEVICE, interval=0.5, collectors=["cpu", "agent"], extra=f"""
[[cameras]]
name = "door"
source = "{scene(tmp_path / 'frames')}"
fps = 8
queue_size = 32
track_timeout = 3
batch_interval = 0.5

[cameras.detector]
type = "ssdlite"
threshold = 0.5
""")
    obs, inbox = observer(broker, f"edgebus/{DEVICE}/#")
    proc = spawn_agent(config)
    try:
        events_topic = f"edgebus/{DEVICE}/events/door"
        assert inbox.wait_for(lambda ms: frames_seen(inbox) == 16, timeout=60), \
            f"only {frames_seen(inbox)} of 16 frames published"
        health_topic = f"edgebus/{DEVICE}/state/door_health"
        assert inbox.wait_for(lambda ms: b'"ended"' in b"".join(inbox.payloads(health_topic)))
        assert stop_agent(proc) == 0
        events = [json.loads(p) for p in inbox.payloads(events_topic)]
        starts = [e for e in events if e["type"] == "start"]
        ends = [e for e in events if e["type"] == "end"]
        assert [e["label"] for e in starts] == ["person"]
        assert ends[0]["track_id"] == starts[0]["track_id"] and ends[0]["reason"] == "lost"
        x1, _y1, x2, y2 = ends[0]["box"]
        assert x1 < 0.5 < x2 and y2 > 0.6  # the astronaut, centre-left to bottom of the frame
        assert base64.b64decode(ends[0]["snapshot_jpeg_b64"])[:2] == b"\xff\xd8"  # a JPEG
        batches = [decode_record(p) for p in inbox.payloads(f"edgebus/{DEVICE}/detections/door")]
        assert all(isinstance(b, DetectionsBatch) for b in batches)
        frames = [f for b in batches if isinstance(b, DetectionsBatch) for f in b.frames]
        with_person = [f for f in frames if any(d.label == "person" for d in f.detections)]
        assert 6 <= len(with_person) <= 8 and len(frames) == 16
        seqs = [b.first_seq for b in batches if isinstance(b, DetectionsBatch)]
        assert seqs == sorted(seqs) and seqs[0] == 0
        counts = inbox.payloads(f"edgebus/{DEVICE}/state/door_objects")
        assert json.loads(counts[-1]) == {"person": 0}
        assert any(json.loads(c).get("person") == 1 for c in counts)
        # The folder was read to its end; the agent runs cameras and says so in its birth.
        health = [json.loads(p)["state"] for p in inbox.payloads(health_topic)]
        assert health == ["connecting", "streaming", "ended"]
        birth = decode_record(inbox.payloads(f"edgebus/{DEVICE}/birth")[-1])
        assert isinstance(birth, Birth) and "cameras" in birth.capabilities
    finally:
        reap_agent(proc)
        obs.stop()



def test_cameras_are_assigned_and_unassigned_by_command(broker: RunningBroker, tmp_path: Path) -> None:
    folder = scene(tmp_path / "frames")
    # A source from the bus must be in the device's allow-list ([commands], agents/camera/source_policy.py).
    config = agent_toml(broker, tmp_path, DEVICE, interval=0.5, collectors=["agent"],
                        extra=f'\n[commands]\ncamera_folders = ["{tmp_path}"]\n')
    obs, inbox = observer(broker, f"edgebus/{DEVICE}/#")
    proc = spawn_agent(config)

    def send(name: str, command_id: str, **args: object) -> dict[str, object]:
        obs.publish(f"edgebus/{DEVICE}/cmd/{name}", encode_record(Command(
            device=DEVICE, name=name, command_id=command_id, time_ms=1, args=args)))

        def reply() -> dict[str, object] | None:
            for p in inbox.payloads(f"edgebus/{DEVICE}/state/last_command"):
                if p and json.loads(p).get("id") == command_id:
                    return dict(json.loads(p))
            return None

        assert inbox.wait_for(lambda ms: reply() is not None, timeout=30), f"no reply to {command_id}"
        answer = reply()
        assert answer is not None
        return answer

    try:
        assert inbox.wait_last(f"edgebus/{DEVICE}/status", b"online")
        assigned = send("assign", "a-1", camera="door", source=str(folder), fps=8, queue_size=32,
                        track_timeout=3, batch_interval=0.5)
        assert assigned["ok"] is True, assigned["error"]
        assert assigned["result"] == {
            "camera": "door", "started": True, "replaced": False}, assigned
        assert inbox.wait_for(lambda ms: frames_seen(inbox) == 16, timeout=60)
        assert any(json.loads(p)["type"] == "start" and json.loads(p)["label"] == "person"
                   for p in inbox.payloads(f"edgebus/{DEVICE}/events/door"))
        bad = send("assign", "a-2", camera="door", source=str(tmp_path / "missing"))
        assert bad["ok"] is False and "missing" in str(bad["error"])
        done = send("unassign", "a-3", camera="door")
        assert done["ok"] is True and done["result"] == {"camera": "door", "stopped": True}
        gone = send("unassign", "a-4", camera="door")
        assert gone["ok"] is False and "no camera 'door'" in str(gone["error"])
        assert stop_agent(proc) == 0
    finally:
        reap_agent(proc)
        obs.stop()
