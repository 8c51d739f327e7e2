"""The camera pipeline driven frame by frame and on its threads, publishing into a real outbox.

A deterministic test detector finds the bright square the synthetic frames
contain. The sessions here are never started: what the pipeline publishes is
read back from the session's outbox, exactly as it would be sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.camera.config import CameraConfig
from agents.camera.events import TrackEvent
from agents.camera.pipeline import CameraPipeline
from agents.camera.publisher import DetectionsPublisher
from agents.detectors.base import Detector, Frame
from broker.outbox import OutboxMessage
from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher
from schemas.detections import Detection, DetectionsBatch
from schemas.messages import MetricSample, decode_record

cv2 = pytest.importorskip("cv2")

H, W = 120, 160


class BrightSquareDetector(Detector):
    """Reports the bounding box of the pixels brighter than 200 as a 'square'.

    Confidence is the mean brightness of the box, so a brighter square is a better sighting.
    """

    TYPE = "bright-square"

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on or set()

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Detector:
        return cls()

    def detect(self, frame: Frame) -> list[Detection]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError("detector hiccup")
        bright = frame.max(axis=2) > 200
        ys, xs = np.nonzero(bright)
        if len(xs) == 0:
            return []
        height, width = bright.shape
        x1, x2, y1, y2 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        confidence = float(frame[y1:y2, x1:x2].max(axis=2).mean()) / 255
        return [Detection("square", round(confidence, 3),
                          (x1 / width, y1 / height, x2 / width, y2 / height))]


def scene(square_x: int | None, brightness: int = 230) -> Frame:
    frame = np.full((H, W, 3), 15, np.uint8)
    if square_x is not None:
        frame[40:70, square_x:square_x + 30] = brightness
    return frame


def camera(**extra: Any) -> CameraConfig:
    data: dict[str, Any] = {"name": "front", "source": "unused.avi",
                            "detector": {"type": "bright-square"}, "track_timeout": 2,
                            "track_min_hits": 2, "batch_interval": 10.0, "batch_max_frames": 4}
    data.update(extra)
    return CameraConfig.from_mapping(data)


def device_session(**config: Any) -> BusSession:
    return BusSession(BusConfig(device="cam-1", clean_start=True, **config))


def queued(session: BusSession) -> list[OutboxMessage]:
    return [row.message for row in session.outbox.peek(limit=10_000)]


def batches(messages: list[OutboxMessage]) -> list[DetectionsBatch]:
    found = [decode_record(m.payload) for m in messages if "/detections/" in m.topic]
    assert all(isinstance(b, DetectionsBatch) for b in found)
    return found  # type: ignore[return-value]


def events(messages: list[OutboxMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if "/events/" in m.topic]


def states(messages: list[OutboxMessage]) -> list[dict[str, int]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith("/state/front_objects")]


def assert_consecutive(found: list[DetectionsBatch]) -> None:
    expected = 0
    for batch in found:
        assert batch.first_seq == expected
        expected = batch.next_seq


def pipeline_for(config: CameraConfig, session: BusSession,
                 detector: Detector | None = None) -> CameraPipeline:
    publisher = DetectionsPublisher.for_camera(session, config)
    return CameraPipeline(config, detector or BrightSquareDetector(), publisher)


def test_a_square_passing_by_is_one_track_with_start_end_and_counts() -> None:
    session = device_session()
    pipeline = pipeline_for(camera(), session)
    xs: list[int | None] = [None, 10, 20, 30, 40, 50, None, None, None]
    brightness = [230, 230, 250, 230, 230, 230, 230, 230, 230]
    updates = [pipeline.process(scene(x, b), 1_000 + 100 * i)
               for i, (x, b) in enumerate(zip(xs, brightness, strict=True))]
    pipeline.stop()

    assert all(u is not None for u in updates)  # no motion gate: every frame is analysed
    assert [d.track_id for d in updates[2].detections] == [1]  # type: ignore[union-attr]
    messages = queued(session)
    found = batches(messages)
    assert [len(b.frames) for b in found] == [4, 4, 1]
    assert_consecutive(found)
    assert [f.time_ms for b in found for f in b.frames] == [1_000 + 100 * i for i in range(9)]
    tracks = [d.track_id for b in found for f in b.frames for d in f.detections]
    assert tracks == [None, 1, 1, 1, 1]
    assert all(b.device == "cam-1" and b.camera == "front" for b in found)

    start, end = events(messages)
    assert (start["type"], start["track_id"], start["label"], start["time_ms"]) == (
        "start", 1, "square", 1_100)
    assert (end["type"], end["track_id"], end["reason"], end["duration_ms"]) == ("end", 1, "lost", 400)
    assert end["time_ms"] == 1_500 and end["best_time_ms"] == 1_200
    assert end["confidence"] == pytest.approx(250 / 255, abs=0.01)
    assert "snapshot_jpeg_b64" in end and TrackEvent.decode(json.dumps(end)).snapshot_jpeg
    assert states(messages) == [{}, {"square": 1}, {"square": 0}]
    state_message = next(m for m in messages if "/state/" in m.topic)
    assert state_message.retain and state_message.qos == 1

    stats = pipeline.stats()
    assert (stats.frames_seen, stats.frames_detected, stats.tracks_started, stats.tracks_ended) == (
        9, 9, 1, 1)
    assert (stats.batches_published, stats.frames_published, stats.events_published) == (3, 9, 2)
    assert stats.inference_ms_avg > 0 and stats.overhead_ms_avg > 0


def test_motion_gate_skips_still_frames_but_not_while_a_track_is_unsettled() -> None:
    session = device_session()
    config = camera(motion={"keepalive": 0.35})
    detector = BrightSquareDetector()
    pipeline = pipeline_for(config, session, detector)
    # still dark, a square appears and stays still, then vanishes, then still dark
    xs: list[int | None] = [None] * 3 + [50] * 6 + [None] * 6
    analysed = [pipeline.process(scene(x), 100 * i) is not None for i, x in enumerate(xs)]
    pipeline.stop()
    assert analysed == [
        True, False, False,                     # first frame, then still (keepalive not due)
        True, True, False, False, False, True,  # appears (motion), confirmation, still, keepalive
        True, True, False, False, False, True,  # vanishes (motion), miss #2 ends it, still, keepalive
    ]
    stats = pipeline.stats()
    assert stats.motion_skipped == analysed.count(False) == 8
    assert detector.calls == stats.frames_detected == 7
    kinds = [(e["type"], e.get("reason")) for e in events(queued(session))]
    assert kinds == [("start", None), ("end", "lost")]


def test_min_confidence_and_labels_filter_before_tracking() -> None:
    session = device_session()
    pipeline = pipeline_for(camera(min_confidence=0.95, track_min_hits=1), session)
    for i in range(3):
        pipeline.process(scene(20, brightness=220), i)  # confidence 0.86: ignored
    pipeline.stop()
    assert pipeline.stats().tracks_started == 0
    assert [len(f.detections) for b in batches(queued(session)) for f in b.frames] == [0, 0, 0]

    session = device_session()
    pipeline = pipeline_for(camera(labels=["person"], track_min_hits=1), session)
    pipeline.process(scene(20), 0)
    pipeline.stop()
    assert pipeline.stats().tracks_started == 0
    assert states(queued(session)) == [{"person": 0}]


def test_stop_ends_live_tracks_and_flushes_the_partial_batch() -> None:
    session = device_session()
    pipeline = pipeline_for(camera(track_min_hits=1), session)
    pipeline.process(scene(20), 0)
    assert batches(queued(session)) == []
    pipeline.stop()
    messages = queued(session)
    assert [len(b.frames) for b in batches(messages)] == [1]
    assert [(e["type"], e.get("reason")) for e in events(messages)] == [
        ("start", None), ("end", "stopped")]
    pipeline.stop()  # idempotent
    assert len(queued(session)) == len(messages)


def test_sequences_are_per_camera_durable_and_apart_from_metrics(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    session = device_session(outbox_path=path)
    front = DetectionsPublisher(session, "front", batch_max_frames=2)
    back = DetectionsPublisher(session, "back", batch_max_frames=2)
    metrics = MetricsPublisher(session)
    for i in range(4):
        front.add_frame(_frame(i))
    back.add_frame(_frame(0))
    back.flush()
    assert metrics.publish([MetricSample(0, "temp_c", 40.0)] * 3)
    epoch = front.epoch
    session.outbox.close()

    session = device_session(outbox_path=path)
    front = DetectionsPublisher(session, "front", batch_max_frames=1)
    front.add_frame(_frame(9))
    found = batches(queued(session))
    by_camera = {cam: [(b.first_seq, len(b.frames)) for b in found if b.camera == cam]
                 for cam in ("front", "back")}
    assert by_camera == {"front": [(0, 2), (2, 2), (4, 1)], "back": [(0, 1)]}
    assert {b.epoch for b in found} == {epoch} == {metrics.epoch}
    metric_batches = [decode_record(m.payload) for m in queued(session) if m.topic.endswith("/metrics")]
    assert [b.first_seq for b in metric_batches] == [0]  # type: ignore[attr-defined]
    session.outbox.close()


def test_a_refused_batch_is_counted_and_its_numbers_are_not_used() -> None:
    session = device_session(outbox_max_messages=1)
    publisher = DetectionsPublisher(session, "front", batch_max_frames=1)
    assert publisher.add_frame(_frame(0))
    assert not publisher.add_frame(_frame(1))
    assert (publisher.batches, publisher.frames_refused) == (1, 1)
    session.outbox.ack([row.id for row in session.outbox.peek()])
    assert publisher.add_frame(_frame(2))
    assert [b.first_seq for b in batches(queued(session))] == [1]


def test_batches_go_out_on_time_even_when_frames_stop() -> None:
    session = device_session()
    publisher = DetectionsPublisher(session, "front", batch_interval=1.0, batch_max_frames=100)
    publisher.add_frame(_frame(1_000))
    publisher.add_frame(_frame(1_500))
    assert publisher.flush_if_due(1_900) and publisher.pending == 2
    publisher.flush_if_due(2_000)
    assert publisher.pending == 0
    assert [len(b.frames) for b in batches(queued(session))] == [2]


def _frame(time_ms: int) -> Any:
    from schemas.detections import FrameDetections

    return FrameDetections(time_ms, (Detection("square", 0.9, (0.1, 0.1, 0.2, 0.2), 1),))


def test_threads_hand_every_captured_frame_to_detection_or_count_it_dropped(tmp_path: Path) -> None:
    for i in range(30):
        assert cv2.imwrite(str(tmp_path / f"{i:03d}.png"), scene(5 * (i % 20)))
    session = device_session()
    config = camera(source=str(tmp_path), fps=0, queue_size=1)
    pipeline = pipeline_for(config, session, BrightSquareDetector(fail_on={1}))
    pipeline.start()
    try:
        assert pipeline.wait_finished(20)
    finally:
        pipeline.stop()
    stats = pipeline.stats()
    assert stats.source_ended and not stats.running
    assert stats.frames_captured == 30
    assert stats.frames_seen + stats.frames_dropped == 30
    assert stats.frames_dropped >= 0 and stats.frames_seen >= 1
    # The first frame's detector failure was counted, and did not stop the thread.
    assert stats.detector_errors == 1 and stats.frames_detected == stats.frames_seen - 1
    assert stats.frames_published == stats.frames_detected
    assert_consecutive(batches(queued(session)))


class StreamWithOutages:
    """A live reader scripted per connection: frames with the square in view, or None to refuse.

    Once the script is used up every open is refused, so the stream stays down.
    """

    def __init__(self, script: list[int | None]) -> None:
        self.script = list(script)
        self.left = 0
        self.x = 0

    def open(self) -> None:
        from schemas.errors import SourceUnavailable

        step = self.script.pop(0) if self.script else None
        if step is None:
            raise SourceUnavailable("connection refused")
        self.left = step

    def read(self) -> Frame | None:
        if self.left <= 0:
            return None
        self.left -= 1
        self.x = (self.x + 2) % 100
        return scene(20 + self.x)

    def skip(self) -> bool:
        return self.read() is not None

    def close(self) -> None:
        self.left = 0


def health_states(messages: list[OutboxMessage]) -> list[tuple[str, str]]:
    found = [json.loads(m.payload) for m in messages if m.topic.endswith("/state/front_health")]
    return [(h["state"], h["error"]) for h in found]


def test_a_dropped_stream_ends_its_tracks_and_zeroes_the_counts() -> None:
    from agents.camera.sources import FrameSource
    from tests.bus_helpers import wait_until

    session = device_session()
    config = camera(track_timeout=50, queue_size=100, batch_interval=0.0)
    source = FrameSource(StreamWithOutages([6, None, 5]), description="rtsp://***@cam/s", live=True,
                         reconnect_min_delay=0.01, reconnect_max_delay=0.02)
    pipeline = CameraPipeline(config, BrightSquareDetector(), DetectionsPublisher.for_camera(
        session, config), source=source)
    pipeline.start()
    try:
        # The second outage never ends: the script is used up.
        assert wait_until(lambda: health_states(queued(session)).count(
            ("reconnecting", "connection refused")) == 2 and pipeline.stats().frames_detected == 11)
        stats = pipeline.stats()
        assert not stats.streaming and stats.source_state == "reconnecting"
        assert stats.source_outages == 2 and stats.active_tracks == 0
    finally:
        pipeline.stop()
    messages = queued(session)
    # Every frame read before a drop was analysed before the tracks ended.
    assert [(e["type"], e["track_id"], e.get("reason")) for e in events(messages)] == [
        ("start", 1, None), ("end", 1, "source_lost"), ("start", 2, None), ("end", 2, "source_lost")]
    ends = [e for e in events(messages) if e["type"] == "end"]
    assert [e["duration_ms"] >= 0 for e in ends] == [True, True]
    assert states(messages) == [{}, {"square": 1}, {"square": 0}, {"square": 1}, {"square": 0}]
    assert health_states(messages) == [
        ("connecting", ""), ("streaming", ""), ("reconnecting", "stream dropped"),
        ("reconnecting", "connection refused"), ("streaming", ""),
        ("reconnecting", "stream dropped"), ("reconnecting", "connection refused"), ("stopped", "")]
    health = next(m for m in messages if m.topic.endswith("/state/front_health"))
    assert health.retain and health.qos == 1
    assert json.loads(health.payload)["source"] == "rtsp://***@cam/s"
    assert sum(len(b.frames) for b in batches(messages)) == 11


def test_the_health_record_refuses_what_it_cannot_mean() -> None:
    from schemas.camera_health import CameraHealth, SourceState
    from schemas.errors import CodecError

    health = CameraHealth("front", SourceState.RECONNECTING, 5, "stream dropped", "rtsp://cam/s")
    assert CameraHealth.decode(health.encode()) == health and not health.streaming
    assert CameraHealth.decode(b'{"camera":"front","state":"streaming","since_ms":1,"new":1}').streaming
    for bad in (b'{"camera":"front","state":"asleep","since_ms":1}', b'{"camera":"front"}',
                b'{"camera":"a/b","state":"streaming","since_ms":1}', b"[]", b"not json",
                b'{"camera":"front","state":"streaming","since_ms":-1}'):
        with pytest.raises(CodecError):
            CameraHealth.decode(bad)
