"""Following objects from frame to frame by box overlap, so a person is one track, not 300 detections.

Each analysed frame's detections are matched to the live tracks of the same
label, greedily by intersection over union (highest first, at least
``iou_threshold``); unmatched detections open *tentative* tracks. A tentative
track is confirmed after ``min_hits`` sightings in a row (it then gets the next
id; ids only grow, so a consumer never sees one reused in a run) and is
forgotten silently if it is missed before that, which keeps one-frame false
positives out of the events. A confirmed track ends after ``max_missed``
analysed frames in a row without a match.

Every track remembers its best sighting (highest confidence): the box, the
time and, when the frame is given, a copy of the crop around it, which becomes
the end event's snapshot. The tracker is pure logic: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.detectors.base import Frame
from schemas.detections import Box, Detection

__all__ = ["IouTracker", "Track", "TrackerUpdate", "crop", "iou"]

#: Context kept around a box in a snapshot crop, as a fraction of the box size.
CROP_MARGIN = 0.15


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 when they do not touch).

    >>> iou((0.0, 0.0, 0.5, 0.5), (0.25, 0.0, 0.75, 0.5))
    0.3333333333333333
    """
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop(frame: Frame, box: Box, margin: float = CROP_MARGIN) -> Frame:
    """A copy of the part of ``frame`` under the normalised ``box``, with some context around it."""
    height, width = frame.shape[:2]
    pad_x = (box[2] - box[0]) * margin
    pad_y = (box[3] - box[1]) * margin
    x1 = max(0, int((box[0] - pad_x) * width))
    y1 = max(0, int((box[1] - pad_y) * height))
    x2 = min(width, max(x1 + 1, int(np.ceil((box[2] + pad_x) * width))))
    y2 = min(height, max(y1 + 1, int(np.ceil((box[3] + pad_y) * height))))
    return frame[y1:y2, x1:x2].copy()


@dataclass(slots=True, eq=False)
class Track:
    """One object followed over time. ``track_id`` is 0 until the track is confirmed."""

    label: str
    box: Box
    confidence: float
    first_ms: int
    last_ms: int
    best_confidence: float
    best_box: Box
    best_ms: int
    best_crop: Frame | None = field(default=None, repr=False)
    track_id: int = 0
    hits: int = 1
    missed: int = 0

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0

    @property
    def duration_ms(self) -> int:
        """From the first to the last sighting."""
        return self.last_ms - self.first_ms

    def _see(self, detection: Detection, time_ms: int, frame: Frame | None) -> None:
        self.box = detection.box
        self.confidence = detection.confidence
        self.last_ms = time_ms
        self.hits += 1
        self.missed = 0
        if detection.confidence > self.best_confidence:
            self.best_confidence = detection.confidence
            self.best_box = detection.box
            self.best_ms = time_ms
            if frame is not None:
                self.best_crop = crop(frame, detection.box)


@dataclass(frozen=True, slots=True)
class TrackerUpdate:
    """What one frame changed: its detections with track ids, and the tracks that started or ended."""

    detections: tuple[Detection, ...]
    started: tuple[Track, ...] = ()
    ended: tuple[Track, ...] = ()


class IouTracker:
    """Greedy IoU matching per label (see the module docstring)."""

    def __init__(self, *, iou_threshold: float = 0.3, max_missed: int = 5, min_hits: int = 2,
                 first_id: int = 1) -> None:
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
        if max_missed < 1 or min_hits < 1 or first_id < 1:
            raise ValueError("max_missed, min_hits and first_id must be at least 1")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.min_hits = min_hits
        self.next_id = first_id
        self._tracks: list[Track] = []

    @property
    def tracks(self) -> list[Track]:
        """The confirmed tracks that have not ended, oldest first."""
        return [t for t in self._tracks if t.confirmed]

    @property
    def unsettled(self) -> bool:
        """True while a track waits for confirmation or has been missed (it needs more frames)."""
        return any(not t.confirmed or t.missed for t in self._tracks)

    def counts(self) -> dict[str, int]:
        """Confirmed live tracks per label."""
        result: dict[str, int] = {}
        for track in self.tracks:
            result[track.label] = result.get(track.label, 0) + 1
        return result

    def update(self, detections: list[Detection] | tuple[Detection, ...], time_ms: int,
               frame: Frame | None = None) -> TrackerUpdate:
        """Match one analysed frame's detections; ``frame`` (optional) feeds the snapshots."""
        pairs = sorted(
            ((iou(track.box, det.box), ti, di)
             for ti, track in enumerate(self._tracks)
             for di, det in enumerate(detections) if det.label == track.label),
            key=lambda p: p[0], reverse=True)
        track_of: dict[int, int] = {}
        used_tracks: set[int] = set()
        for overlap, ti, di in pairs:
            if overlap < self.iou_threshold:
                break
            if ti in used_tracks or di in track_of:
                continue
            used_tracks.add(ti)
            track_of[di] = ti
        started: list[Track] = []
        ended: list[Track] = []
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.missed += 1
        for di, ti in track_of.items():
            track = self._tracks[ti]
            track._see(detections[di], time_ms, frame)
            if not track.confirmed and track.hits >= self.min_hits:
                self._confirm(track)
                started.append(track)
        new_tracks: list[Track] = []
        for di, det in enumerate(detections):
            if di in track_of:
                continue
            track = Track(label=det.label, box=det.box, confidence=det.confidence,
                          first_ms=time_ms, last_ms=time_ms, best_confidence=det.confidence,
                          best_box=det.box, best_ms=time_ms,
                          best_crop=crop(frame, det.box) if frame is not None else None)
            if self.min_hits <= 1:
                self._confirm(track)
                started.append(track)
            track_of[di] = len(self._tracks) + len(new_tracks)
            new_tracks.append(track)
        kept: list[Track] = []
        for track in self._tracks:
            if not track.missed:
                kept.append(track)
            elif not track.confirmed:
                continue  # a tentative track missed once was noise
            elif track.missed >= self.max_missed:
                ended.append(track)
            else:
                kept.append(track)
        everything = self._tracks + new_tracks
        labelled = tuple(
            det if everything[track_of[di]].track_id == 0
            else Detection(det.label, det.confidence, det.box, everything[track_of[di]].track_id)
            for di, det in enumerate(detections))
        self._tracks = kept + new_tracks
        return TrackerUpdate(labelled, tuple(started), tuple(ended))

    def end_all(self) -> tuple[Track, ...]:
        """End every confirmed track (the pipeline stops); tentative ones are dropped."""
        ended = tuple(self.tracks)
        self._tracks = []
        return ended

    def _confirm(self, track: Track) -> None:
        track.track_id = self.next_id
        self.next_id += 1
