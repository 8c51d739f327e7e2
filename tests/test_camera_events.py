"""Track event JSON: the documented fields, plain JSON, bounded snapshots."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from agents.camera.events import TrackEvent, snapshot_jpeg
from agents.camera.tracker import IouTracker, Track
from schemas.detections import Detection
from schemas.errors import CodecError

cv2 = pytest.importorskip("cv2")


def finished_track() -> Track:
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[30:90, 40:100] = (0, 200, 255)
    tracker = IouTracker(min_hits=1, max_missed=1)
    tracker.update([Detection("person", 0.7, (0.25, 0.25, 0.625, 0.75))], 1_000, frame)
    tracker.update([Detection("person", 0.9, (0.25, 0.25, 0.625, 0.75))], 1_400, frame)
    return tracker.update([], 1_800).ended[0]


def test_start_event_fields() -> None:
    tracker = IouTracker(min_hits=1)
    track = tracker.update([Detection("car", 0.66, (0.1, 0.2, 0.3, 0.4))], 5_000).started[0]
    data = json.loads(TrackEvent.started("front", track).encode())
    assert data == {"type": "start", "version": 1, "camera": "front", "track_id": 1,
                    "label": "car", "confidence": 0.66, "box": [0.1, 0.2, 0.3, 0.4],
                    "time_ms": 5_000}


def test_end_event_fields_and_snapshot() -> None:
    event = TrackEvent.ended("front", finished_track(), snapshot_max_bytes=20_000)
    data = json.loads(event.encode())
    assert {k: data[k] for k in ("type", "camera", "track_id", "label", "confidence",
                                 "time_ms", "duration_ms", "reason", "best_time_ms")} == {
        "type": "end", "camera": "front", "track_id": 1, "label": "person", "confidence": 0.9,
        "time_ms": 1_400, "duration_ms": 400, "reason": "lost", "best_time_ms": 1_400}
    assert data["box"] == [0.25, 0.25, 0.625, 0.75]
    jpeg = base64.b64decode(data["snapshot_jpeg_b64"])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[2] == 3
    # The crop is of the orange square (BGR 0, 200, 255), not of the black background.
    assert image[image.shape[0] // 2, image.shape[1] // 2, 2] > 200


def test_end_event_without_snapshot_leaves_the_field_out() -> None:
    data = json.loads(TrackEvent.ended("front", finished_track()).encode())
    assert "snapshot_jpeg_b64" not in data
    assert data["duration_ms"] == 400


def test_decode_round_trip_and_ignores_unknown_fields() -> None:
    event = TrackEvent.ended("front", finished_track(), reason="stopped", snapshot_max_bytes=20_000)
    assert TrackEvent.decode(event.encode()) == event
    data = json.loads(event.encode())
    data["future_field"] = {"x": 1}
    assert TrackEvent.decode(json.dumps(data)) == event


@pytest.mark.parametrize("payload", [b"not json", b"[1]", b'{"type": "start"}',
                                     b'{"type": "begin", "camera": "c", "track_id": 1, "label": "x",'
                                     b' "confidence": 1, "box": [0, 0, 1, 1], "time_ms": 1}'])
def test_decode_refuses_bad_events(payload: bytes) -> None:
    with pytest.raises(CodecError):
        TrackEvent.decode(payload)


def test_snapshot_fits_its_bound_by_shrinking() -> None:
    noise = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    full = snapshot_jpeg(noise, 10_000_000)
    assert full is not None
    bounded = snapshot_jpeg(noise, 8_000)
    assert bounded is not None and len(bounded) <= 8_000 < len(full)
    small = cv2.imdecode(np.frombuffer(bounded, np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[1] < 640
    assert snapshot_jpeg(noise, 100) is None
