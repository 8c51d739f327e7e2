"""A whole camera pipeline on a video file, publishing through a real broker.

A synthetic clip (a bright square crossing a dark scene) is written with
``cv2.VideoWriter``, played by the pipeline's own threads with motion gating
and a deterministic detector, and read back by a plain MQTT client: detection
batches decode with consecutive sequence numbers, track events arrive as JSON,
and the retained object count ends at zero.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.camera.config import CameraConfig
from agents.camera.pipeline import CameraPipeline
from agents.camera.publisher import DetectionsPublisher
from broker.session import BusConfig, BusSession
from schemas.detections import DetectionsBatch
from schemas.messages import decode_record
from tests.brokers import MqttProbe, RunningBroker
from tests.test_camera_pipeline import BrightSquareDetector, scene

cv2 = pytest.importorskip("cv2")

pytestmark = pytest.mark.integration

FRAMES = 40
SQUARE_FRAMES = range(5, 25)


def write_clip(path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (160, 120))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(scene(5 * (i - 5) if i in SQUARE_FRAMES else None))
    writer.release()


def test_video_file_through_the_pipeline_to_a_real_broker(broker: RunningBroker,
                                                           tmp_path: Path) -> None:
    clip = tmp_path / "crossing.avi"
    write_clip(clip)
    config = CameraConfig.from_mapping({
        "name": "front", "source": str(clip), "fps": 0, "queue_size": FRAMES,
        "detector": {"type": "bright-square"}, "track_timeout": 3, "track_min_hits": 2,
        "batch_interval": 60.0, "batch_max_frames": 8, "motion": {"keepalive": 0}})
    bus = BusSession(BusConfig(host=broker.host, port=broker.port, username=broker.username,
                               password=broker.password, device="cam-1", clean_start=True))
    with MqttProbe(broker, "camera-watcher") as probe:
        probe.connected().subscribe("edgebus/cam-1/#")
        bus.start()
        try:
            assert bus.wait_connected(15)
            publisher = DetectionsPublisher.for_camera(bus, config)
            pipeline = CameraPipeline(config, BrightSquareDetector(), publisher)
            pipeline.start()
            assert pipeline.wait_finished(20)
            pipeline.stop()
            assert bus.flush(15)
        finally:
            bus.stop()
        stats = pipeline.stats()
        found: dict[int, DetectionsBatch] = {}
        events: list[dict[str, Any]] = []
        counts: list[dict[str, int]] = []
        for _ in range(500):  # bounded: until everything the pipeline published has arrived
            if (sum(len(b.frames) for b in found.values()) >= stats.frames_published
                    and len(events) >= 2 and counts and counts[-1] == {"square": 0}):
                break
            message = probe.expect(10)
            if "/detections/front" in message.topic:
                batch = decode_record(message.payload)
                assert isinstance(batch, DetectionsBatch)
                found[batch.first_seq] = batch  # a redelivered duplicate lands on itself
            elif message.topic.endswith("/events/front"):
                events.append(json.loads(message.payload))
            elif message.topic.endswith("/state/front_objects"):
                counts.append(json.loads(message.payload))

    # Nothing captured was dropped (the queue holds the clip); still dark frames were skipped.
    assert stats.frames_captured == FRAMES and stats.frames_dropped == 0
    assert stats.motion_skipped > 0
    assert stats.frames_detected + stats.motion_skipped == FRAMES
    assert stats.frames_published == stats.frames_detected

    ordered = [found[k] for k in sorted(found)]
    expected_seq = 0
    for batch in ordered:
        assert (batch.device, batch.camera, batch.first_seq) == ("cam-1", "front", expected_seq)
        expected_seq = batch.next_seq
    assert expected_seq == stats.frames_published
    frames = [f for b in ordered for f in b.frames]
    assert [f.time_ms for f in frames] == sorted(f.time_ms for f in frames)
    seen = [d for f in frames for d in f.detections]
    assert len(seen) == len(SQUARE_FRAMES)  # one square per frame it is in, none elsewhere
    assert {d.track_id for d in seen} == {None, 1}  # tentative first sighting, then track 1

    assert [(e["type"], e["track_id"], e["label"]) for e in events] == [
        ("start", 1, "square"), ("end", 1, "square")]
    start, end = events
    assert end["reason"] == "lost"
    assert end["duration_ms"] == end["time_ms"] - start["time_ms"] >= 0
    snapshot = cv2.imdecode(np.frombuffer(base64.b64decode(end["snapshot_jpeg_b64"]), np.uint8),
                            cv2.IMREAD_COLOR)
    assert snapshot is not None and snapshot.max() > 200
    assert counts[-1] == {"square": 0} and {"square": 1} in counts
