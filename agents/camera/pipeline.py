"""One camera's pipeline: capture thread -> drop-oldest queue -> detection thread -> bus.

The capture thread reads the source at its pace and never waits for the
detector: when the queue (``queue_size`` frames) is full the oldest frame is
dropped and counted. The detection thread takes frames in order and for each
one runs :meth:`CameraPipeline.process`:

1. motion gate (optional): a still frame is skipped, unless a track is waiting
   to be confirmed or ended, or nothing was detected for ``motion.keepalive``
   seconds, so tracks still start and end on time in a still scene;
2. the detector, then the ``min_confidence`` and ``labels`` filters;
3. the IoU tracker, which gives detections their track ids;
4. the publisher: the frame joins the current detections batch; track starts
   and ends go out as events; the object counts are updated when they change.

Skipped frames are not published: a batch holds the frames that were analysed,
and the tracks (and so the counts) carry over a still stretch unchanged.

The source's health travels through the same queue, in order with the frames
(and never dropped): every change is published retained on
``state/{camera}_health`` (:mod:`schemas.camera_health`). When a live stream
drops, the frames read before the drop are analysed first, then every live
track ends with reason ``source_lost`` and the object counts go to zero, so
nobody is shown present in a picture nobody sees; after the stream is back,
tracks start afresh.

:meth:`CameraPipeline.stop`, or the end of a file or folder, drains the queue,
ends the live tracks (reason ``stopped``), flushes the last batch and reports
the camera ``stopped`` (or ``ended`` / ``failed``). The
pipeline does not own the detector or the session: whoever made them closes
them. :meth:`CameraPipeline.process` can be driven directly, without threads
(tests, or a runtime with its own scheduling).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agents.camera.config import CameraConfig
from agents.camera.events import TrackEvent
from agents.camera.frame_queue import DropOldestQueue
from agents.camera.motion import MotionGate
from agents.camera.publisher import DetectionsPublisher
from agents.camera.sources import CapturedFrame, FrameSource, open_source, wall_clock_ms
from agents.camera.tracker import IouTracker, Track, TrackerUpdate
from agents.detectors.base import Detector, Frame
from schemas.camera_health import CameraHealth, SourceState
from schemas.detections import FrameDetections

__all__ = ["CameraConfig", "CameraPipeline", "CameraStats"]

logger = logging.getLogger(__name__)

#: How long the detection thread waits for a frame before checking whether a batch is due.
IDLE_POLL_S = 0.2
#: The end reason of tracks that were live when the stream dropped.
SOURCE_LOST = "source_lost"


@dataclass(frozen=True, slots=True)
class _SourceChange:
    """The source's new state, queued between the frames before and after the change."""

    state: SourceState
    error: str
    time_ms: int


@dataclass(frozen=True, slots=True)
class CameraStats:
    """A snapshot of one camera's counters (for the agent's metrics and status line)."""

    camera: str
    running: bool
    frames_captured: int
    frames_dropped: int
    frames_seen: int
    motion_skipped: int
    frames_shed: int
    frames_detected: int
    detector_errors: int
    inference_ms_avg: float
    overhead_ms_avg: float
    tracks_started: int
    tracks_ended: int
    active_tracks: int
    batches_published: int
    frames_published: int
    frames_refused: int
    events_published: int
    events_refused: int
    source_reconnects: int
    source_ended: bool
    source_error: str
    source_state: str = SourceState.CONNECTING.value
    source_outages: int = 0

    @property
    def streaming(self) -> bool:
        return self.source_state == SourceState.STREAMING


class CameraPipeline:
    """Capture, gate, detect, track and publish for one camera (see the module docstring)."""

    def __init__(
        self,
        config: CameraConfig,
        detector: Detector,
        publisher: DetectionsPublisher,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        source: FrameSource | None = None,
    ) -> None:
        self.config = config
        self.detector = detector
        self.publisher = publisher
        self.clock_ms = clock_ms
        self._source = source
        self.queue: DropOldestQueue[CapturedFrame | _SourceChange] = DropOldestQueue(config.queue_size)
        self.motion = MotionGate(config.motion) if config.motion is not None else None
        self.tracker = IouTracker(iou_threshold=config.track_iou, max_missed=config.track_timeout,
                                  min_hits=config.track_min_hits)
        self._labels = frozenset(config.labels)
        self._keepalive_ms = (round(config.motion.keepalive * 1000)
                              if config.motion is not None and config.motion.keepalive > 0 else None)
        self._last_detect_ms: int | None = None
        self._counts_published = False
        self._capture_thread: threading.Thread | None = None
        self._detect_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._frames_seen = 0
        self._motion_skipped = 0
        self._frames_detected = 0
        self._detector_errors = 0
        self._inference_s = 0.0
        self._overhead_s = 0.0
        self._tracks_started = 0
        self._tracks_ended = 0
        self._frames_shed = 0
        self._source_state = SourceState.CONNECTING
        #: Set by the agent's load shedding: frames are still captured (and the queue keeps
        #: only the newest) but not analysed, and each one skipped is counted.
        self.shed = False

    # -- one frame ------------------------------------------------------

    def process(self, frame: Frame, time_ms: int) -> TrackerUpdate | None:
        """Gate, detect, track and publish one frame; None when the motion gate skipped it.

        Exceptions from the detector propagate (the detection thread counts and logs them).
        """
        started_at = time.perf_counter()
        with self._lock:
            self._frames_seen += 1
        if not self._counts_published:
            self._counts_published = self.publisher.publish_counts({})
        if self.motion is not None:
            moved = self.motion.has_motion(frame)
            overdue = (self._keepalive_ms is not None and (
                self._last_detect_ms is None or time_ms - self._last_detect_ms >= self._keepalive_ms))
            if not (moved or overdue or self.tracker.unsettled):
                self.motion.note_skipped()
                with self._lock:
                    self._motion_skipped += 1
                return None
        self._last_detect_ms = time_ms
        inference_start = time.perf_counter()
        try:
            found = self.detector.detect(frame)
        except Exception:
            with self._lock:
                self._detector_errors += 1
            raise
        inference_s = time.perf_counter() - inference_start
        kept = [d for d in found if d.confidence >= self.config.min_confidence
                and (not self._labels or d.label in self._labels)]
        update = self.tracker.update(kept, time_ms, frame if self.config.snapshot else None)
        self.publisher.add_frame(FrameDetections(time_ms, update.detections))
        self._announce(update.started, update.ended, reason="lost")
        with self._lock:
            self._frames_detected += 1
            self._inference_s += inference_s
            self._overhead_s += time.perf_counter() - started_at - inference_s
        return update

    def _announce(self, started: tuple[Track, ...], ended: tuple[Track, ...], *, reason: str) -> None:
        name = self.config.name
        for track in started:
            self.publisher.publish_event(TrackEvent.started(name, track))
        limit = self.config.snapshot_max_bytes if self.config.snapshot else None
        for track in ended:
            self.publisher.publish_event(
                TrackEvent.ended(name, track, reason=reason, snapshot_max_bytes=limit))
        if started or ended:
            self.publisher.publish_counts(self.tracker.counts())
            with self._lock:
                self._tracks_started += len(started)
                self._tracks_ended += len(ended)

    def source_changed(self, state: SourceState, error: str, time_ms: int) -> None:
        """Publish the source's new health; when it stopped streaming, end every track (``source_lost``)."""
        if state is not SourceState.STREAMING:
            self._announce((), self.tracker.end_all(), reason=SOURCE_LOST)
            self.publisher.publish_counts({})
            if self.motion is not None:
                self.motion.reset()
            self._last_detect_ms = None
        source = self._source
        self.publisher.publish_health(CameraHealth(
            self.config.name, state, time_ms, error,
            source.description if source is not None else str(self.config.source)))

    def finish(self) -> None:
        """End the live tracks (reason ``stopped``), queue the last batch, report the camera stopped."""
        self._announce((), self.tracker.end_all(), reason="stopped")
        self.publisher.flush()
        with self._lock:
            state = self._source_state
        if state not in (SourceState.ENDED, SourceState.FAILED):
            self.source_changed(SourceState.STOPPED, "", self.clock_ms())

    def _on_source_state(self, state: SourceState, error: str) -> None:
        """The source's listener (capture thread): queue the change in order with the frames."""
        with self._lock:
            self._source_state = state
        try:
            self.queue.put(_SourceChange(state, error, self.clock_ms()), keep=True)
        except RuntimeError:
            logger.debug("camera %s: source %s after the queue closed", self.config.name, state)

    # -- threads --------------------------------------------------------

    def start(self) -> None:
        """Open the source and start the capture and detection threads."""
        if self._capture_thread is not None:
            raise RuntimeError(f"camera {self.config.name} already started")
        if self._source is None:
            self._source = open_source(self.config, clock_ms=self.clock_ms,
                                       on_state=self._on_source_state)
        elif self._source.on_state is None:
            self._source.on_state = self._on_source_state
        self.queue.put(_SourceChange(SourceState.CONNECTING, "", self.clock_ms()), keep=True)
        self._capture_thread = threading.Thread(target=self._capture, daemon=True,
                                                name=f"camera-{self.config.name}-capture")
        self._detect_thread = threading.Thread(target=self._detect, daemon=True,
                                               name=f"camera-{self.config.name}-detect")
        self._detect_thread.start()
        self._capture_thread.start()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Block until the source ended (or :meth:`stop`) and every queued frame was handled."""
        return self._finished.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capturing, handle the frames still queued, end the tracks, flush the batch."""
        if self._detect_thread is None:
            if not self._finished.is_set():
                self.finish()
                self._finished.set()
            return
        self._stopping.set()
        if self._source is not None:
            self._source.stop()
        for thread in (self._capture_thread, self._detect_thread):
            if thread is not None:
                thread.join(timeout)
                if thread.is_alive():
                    logger.warning("camera %s: thread %s did not stop within %.0f s",
                                   self.config.name, thread.name, timeout)

    def _capture(self) -> None:
        source = self._source
        assert source is not None
        try:
            for captured in source.frames():
                self.queue.put(captured)
        except Exception as exc:
            logger.exception("camera %s: capture failed", self.config.name)
            self._on_source_state(SourceState.FAILED, f"capture failed: {exc}")
        finally:
            self.queue.close()

    def _detect(self) -> None:
        try:
            while True:
                captured = self.queue.get(IDLE_POLL_S)
                if captured is None:
                    if self.queue.closed and not len(self.queue):
                        break
                    self.publisher.flush_if_due(self.clock_ms())
                    continue
                if isinstance(captured, _SourceChange):
                    try:
                        self.source_changed(captured.state, captured.error, captured.time_ms)
                    except Exception:
                        logger.exception("camera %s: reporting source %s failed", self.config.name,
                                         captured.state)
                    continue
                if self.shed:
                    with self._lock:
                        self._frames_shed += 1
                    self.publisher.flush_if_due(self.clock_ms())
                    continue
                try:
                    self.process(captured.image, captured.time_ms)
                except Exception:
                    errors = self._detector_errors
                    if errors <= 1 or errors % 100 == 0:
                        logger.exception("camera %s: frame %d failed (%d failures so far)",
                                         self.config.name, captured.index, errors)
                self.publisher.flush_if_due(self.clock_ms())
        finally:
            try:
                self.finish()
            except Exception:
                logger.exception("camera %s: final flush failed", self.config.name)
            self._finished.set()

    # -- reporting ------------------------------------------------------

    def stats(self) -> CameraStats:
        """The counters now (safe from any thread)."""
        source = self._source
        publisher = self.publisher
        with self._lock:
            detected = self._frames_detected
            return CameraStats(
                camera=self.config.name,
                running=self._detect_thread is not None and not self._finished.is_set(),
                frames_captured=self.queue.put_count,
                frames_dropped=self.queue.dropped,
                frames_seen=self._frames_seen,
                motion_skipped=self._motion_skipped,
                frames_shed=self._frames_shed,
                frames_detected=detected,
                detector_errors=self._detector_errors,
                inference_ms_avg=1000 * self._inference_s / detected if detected else 0.0,
                overhead_ms_avg=1000 * self._overhead_s / detected if detected else 0.0,
                tracks_started=self._tracks_started,
                tracks_ended=self._tracks_ended,
                active_tracks=len(self.tracker.tracks),
                batches_published=publisher.batches,
                frames_published=publisher.frames_published,
                frames_refused=publisher.frames_refused,
                events_published=publisher.events_published,
                events_refused=publisher.events_refused,
                source_reconnects=source.reconnects if source is not None else 0,
                source_ended=source.ended if source is not None else False,
                source_error=source.last_error if source is not None else "",
                source_state=self._source_state.value,
                source_outages=source.outages if source is not None else 0,
            )
