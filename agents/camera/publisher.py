"""Publishing one camera's output: sequenced detection batches, track events, object counts.

* ``{root}/{device}/detections/{camera}`` - :class:`~schemas.detections.DetectionsBatch`
  envelopes, QoS 1. Frames are collected until ``batch_interval`` seconds of
  frame time or ``batch_max_frames`` frames, then queued as one batch. Every
  analysed frame gets a sequence number from a counter kept per camera in the
  session's outbox and reserved in the same commit that queues the batch (as
  :class:`broker.telemetry.MetricsPublisher` does for metrics), so numbers are
  never reused and a gap always means a real loss. The epoch is the device's
  (the outbox meta key ``epoch``, shared with the metrics).
* ``{root}/{device}/events/{camera}`` - :class:`~agents.camera.events.TrackEvent` JSON, QoS 1.
* ``{root}/{device}/state/{camera}_objects`` - retained JSON object counting the
  confirmed live tracks per label, e.g. ``{"car": 0, "person": 2}`` (keys sorted;
  a label once seen, or named in the camera's ``labels`` filter, stays at 0
  rather than disappearing, so a Home Assistant sensor reading
  ``value_json.person`` keeps a value). Published only when it changes.
* ``{root}/{device}/state/{camera}_health`` - retained
  :class:`~schemas.camera_health.CameraHealth` JSON: whether the camera's
  stream is up, published on every change.

Not thread-safe: one pipeline's detection thread owns it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from agents.camera.config import STATE_SUFFIX, CameraConfig
from agents.camera.events import EVENT_CONTENT_TYPE, TrackEvent
from broker.outbox import OutboxMessage, SequenceSpan
from broker.session import ENVELOPE_CONTENT_TYPE, BusSession
from schemas.camera_health import CameraHealth, camera_health_name
from schemas.detections import DetectionsBatch, FrameDetections
from schemas.errors import ConfigError
from schemas.messages import encode_record
from schemas.stored_ack import detections_stream

__all__ = ["DetectionsPublisher", "sequence_key"]

logger = logging.getLogger(__name__)


def sequence_key(camera: str) -> str:
    """The outbox meta key holding ``camera``'s next detection sequence number."""
    return f"next_seq/detections/{camera}"


class _Refused(Exception):
    """Rolls back a sequence reservation whose batch the outbox refused."""


class DetectionsPublisher:
    """Turns one camera's analysed frames, track events and counts into messages on a session."""

    def __init__(
        self,
        session: BusSession,
        camera: str,
        *,
        batch_interval: float = 1.0,
        batch_max_frames: int = 50,
        labels: Iterable[str] = (),
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        device = session.config.device
        if device is None:
            raise ConfigError("publishing detections needs a device session (set broker.device)")
        if batch_max_frames < 1 or batch_interval < 0:
            raise ConfigError("batch_max_frames must be >= 1 and batch_interval >= 0")
        self.session = session
        self.device = device
        self.camera = camera
        self.batch_interval_ms = round(batch_interval * 1000)
        self.batch_max_frames = batch_max_frames
        clock = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.epoch = session.outbox.set_meta_default("epoch", clock())
        self.detections_topic = session.topics.detections(device, camera)
        self.events_topic = session.topics.events(device, camera)
        self.state_topic = session.topics.state(device, f"{camera}{STATE_SUFFIX}")
        self.health_topic = session.topics.state(device, camera_health_name(camera))
        self._key = sequence_key(camera)
        self._pending: list[FrameDetections] = []
        self._known_labels = set(labels)
        self._last_counts: dict[str, int] | None = None
        self.batches = 0
        self.frames_published = 0
        self.frames_refused = 0
        self.events_published = 0
        self.events_refused = 0

    @classmethod
    def for_camera(cls, session: BusSession, config: CameraConfig, *,
                   clock_ms: Callable[[], int] | None = None) -> DetectionsPublisher:
        """The publisher of ``config``'s camera, with its batching and labels."""
        return cls(session, config.name, batch_interval=config.batch_interval,
                   batch_max_frames=config.batch_max_frames, labels=config.labels,
                   clock_ms=clock_ms)

    @property
    def pending(self) -> int:
        """Frames collected for the next batch."""
        return len(self._pending)

    def add_frame(self, frame: FrameDetections) -> bool:
        """Collect one analysed frame; queue the batch when it is due. False if a batch was refused."""
        self._pending.append(frame)
        if (len(self._pending) >= self.batch_max_frames
                or frame.time_ms - self._pending[0].time_ms >= self.batch_interval_ms):
            return self.flush()
        return True

    def flush_if_due(self, now_ms: int) -> bool:
        """Queue the collected frames if the oldest is ``batch_interval`` old (quiet scenes too)."""
        if self._pending and now_ms - self._pending[0].time_ms >= self.batch_interval_ms:
            return self.flush()
        return True

    def flush(self) -> bool:
        """Queue the collected frames as one batch now; False (counted) when the outbox refused it."""
        frames, self._pending = tuple(self._pending), []
        if not frames:
            return True
        try:
            with self.session.transaction() as tx:
                first = tx.reserve_sequence(len(frames), key=self._key)
                batch = DetectionsBatch(device=self.device, camera=self.camera, epoch=self.epoch,
                                        first_seq=first, frames=frames)
                message = OutboxMessage(self.detections_topic, encode_record(batch), 1, False,
                                        ENVELOPE_CONTENT_TYPE,
                                        SequenceSpan(detections_stream(self.camera), self.epoch, first,
                                                     len(frames)))
                if tx.put(message) is None:
                    raise _Refused
        except _Refused:
            self.frames_refused += len(frames)
            return False
        self.batches += 1
        self.frames_published += len(frames)
        return True

    def publish_event(self, event: TrackEvent) -> bool:
        """Queue a track event (QoS 1); False (counted) when refused."""
        if self.session.publish(self.events_topic, event.encode(), qos=1,
                                content_type=EVENT_CONTENT_TYPE):
            self.events_published += 1
            return True
        self.events_refused += 1
        return False

    def publish_counts(self, counts: Mapping[str, int]) -> bool:
        """Queue the retained object counts if they changed since the last call."""
        self._known_labels.update(counts)
        full = {label: counts.get(label, 0) for label in sorted(self._known_labels)}
        if full == self._last_counts:
            return True
        if not self.session.publish(self.state_topic, json.dumps(full, separators=(",", ":")),
                                    qos=1, retain=True, content_type=EVENT_CONTENT_TYPE):
            return False
        self._last_counts = full
        return True

    def publish_health(self, health: CameraHealth) -> bool:
        """Queue the retained health state (QoS 1); False when the outbox refused it."""
        if health.camera != self.camera:
            raise ValueError(f"health of camera {health.camera!r} on {self.camera!r}'s publisher")
        return self.session.publish(self.health_topic, health.encode(), qos=1, retain=True,
                                    content_type=EVENT_CONTENT_TYPE)
