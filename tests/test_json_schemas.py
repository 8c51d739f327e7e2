"""schemas/json/: one JSON Schema per plain-JSON payload, held to what the code publishes.

The end-to-end tests (tests/camera_outages.py, tests/test_bus_cli.py) also
check every health state, track event, object count and command reply a real
agent published against these files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from agents.camera.events import TrackEvent
from agents.camera.tracker import Track
from coordinator.anomaly.alert import Alert, AlertKind, Severity
from schemas.audit import AuditKind, AuditRecord
from schemas.camera_health import CameraHealth, SourceState
from schemas.ha_discovery import (
    CameraEntities,
    DeviceDescription,
    camera_state_payload,
    describe_metric,
    device_discovery,
    metrics_state_payload,
)
from tests.json_schema import SCHEMAS, assert_conforms, load, problems

FORMAT_MD = Path(__file__).resolve().parents[1] / "schemas" / "FORMAT.md"
NAMES = sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json"))


def test_every_schema_is_documented_and_checkable() -> None:
    text = FORMAT_MD.read_text()
    assert NAMES
    for name in NAMES:
        assert f"schemas/json/{name}.schema.json" in text, f"FORMAT.md does not name {name}"
        problems({}, load(name))  # raises on a keyword the checker would skip
    documented = set(re.findall(r"schemas/json/([a-z-]+)\.schema\.json", text))
    assert documented == set(NAMES)


def track(**overrides: object) -> Track:
    values: dict[str, object] = {
        "label": "person", "box": (0.1, 0.2, 0.5, 0.9), "confidence": 0.8, "first_ms": 1_000,
        "last_ms": 4_000, "best_confidence": 0.9, "best_box": (0.1, 0.2, 0.5, 0.9), "best_ms": 2_000,
        "best_crop": np.full((40, 20, 3), 128, np.uint8), "track_id": 7}
    values.update(overrides)
    return Track(**values)  # type: ignore[arg-type]


def test_track_events_conform() -> None:
    pytest.importorskip("cv2")
    assert_conforms(TrackEvent.started("front", track()).encode(), "track-event")
    for reason in ("lost", "source_lost", "stopped"):
        end = TrackEvent.ended("front", track(), reason=reason, snapshot_max_bytes=8192)
        assert end.snapshot_jpeg is not None
        assert_conforms(end.encode(), "track-event")


def test_health_counts_and_metrics_state_conform() -> None:
    for state in SourceState:
        assert_conforms(CameraHealth("front", state, 5, "stream dropped", "rtsp://***@c/s").encode(),
                        "camera-health")
    assert_conforms(camera_state_payload({"person": 2}, ("car", "person")), "camera-objects")
    assert_conforms(metrics_state_payload({"cpu_percent": 12.5, "temp_c": float("nan"), "up": 1}),
                    "metrics-state")


def test_anomaly_and_discovery_conform() -> None:
    alert = Alert(device="gw-1", metric="temp_c", time_ms=1, value=91.0, score=7.5, threshold=4.0,
                  expected_low=40.0, expected_high=60.0, explanation="far above the usual level",
                  severity=Severity.WARNING, kind=AlertKind.DEVIATION)
    assert_conforms(json.dumps(alert.to_json_dict()), "anomaly")
    desc = DeviceDescription(device="gw-1", sw_version="1.0",
                             metrics=(describe_metric("cpu_percent"),),
                             cameras=(CameraEntities("front", ("person",)),))
    assert_conforms(device_discovery(desc).payload(), "ha-device-discovery")


@pytest.mark.parametrize(("name", "bad"), [
    ("camera-health", {"camera": "front", "state": "asleep", "since_ms": 1}),
    ("camera-health", {"camera": "front", "state": "streaming"}),
    ("track-event", {"type": "end", "version": 1, "camera": "f", "track_id": 1, "label": "p",
                     "confidence": 0.5, "box": [0, 0, 1], "time_ms": 1}),
    ("track-event", {"type": "end", "version": 2, "camera": "f", "track_id": 1, "label": "p",
                     "confidence": 0.5, "box": [0, 0, 1, 1], "time_ms": 1, "reason": "gone"}),
    ("camera-objects", {"person": -1}),
    ("camera-objects", {"person": 1.5}),
    ("metrics-state", {"cpu": "high"}),
    ("command-reply", {"id": "c-1", "name": "rebirth", "device": "gw", "ok": "yes"}),
    ("anomaly", {"device": "gw"}),
    ("ha-device-discovery", {"dev": {}, "o": {}, "availability": [], "qos": 1, "cmps": {}}),
])
def test_the_schemas_refuse_what_readers_could_not_use(name: str, bad: object) -> None:
    assert problems(bad, load(name))


@pytest.mark.parametrize(("block", "name"), [("example-track-event", "track-event"),
                                             ("example-camera-health", "camera-health"),
                                             ("example-audit-event", "audit-event")])
def test_format_md_examples_conform(block: str, name: str) -> None:
    match = re.search(rf"```json {block}\n(.*?)```", FORMAT_MD.read_text(), re.S)
    assert match, f"FORMAT.md lost its {block} block"
    assert_conforms(match.group(1), name)
    if name == "audit-event":
        assert AuditRecord.decode(match.group(1).encode()).kind is AuditKind.REVOCATION
    elif name == "camera-health":
        assert CameraHealth.decode(match.group(1)).state is SourceState.RECONNECTING
    else:
        assert TrackEvent.decode(match.group(1)).reason == "source_lost"
