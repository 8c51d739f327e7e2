"""Track events: plain JSON on ``{root}/{device}/events/{camera}``, readable by any MQTT client.

A track *start* is published when the tracker confirms an object, an *end*
when it has not been seen for ``track_timeout`` analysed frames (or the
pipeline stops). One compact JSON object per message, QoS 1, not retained::

    {"type": "start", "version": 1, "camera": "front", "track_id": 7, "label": "person",
     "confidence": 0.82, "box": [0.41, 0.22, 0.58, 0.91], "time_ms": 1763900000123}

    {"type": "end", "version": 1, "camera": "front", "track_id": 7, "label": "person",
     "confidence": 0.91, "box": [0.40, 0.20, 0.57, 0.90], "time_ms": 1763900004567,
     "duration_ms": 4444, "reason": "lost", "best_time_ms": 1763900002001,
     "snapshot_jpeg_b64": "/9j/4AAQ..."}

Fields:

``type``              ``"start"`` or ``"end"``.
``version``           1; a consumer should ignore fields it does not know.
``camera``            the camera name (also the last topic level).
``track_id``          integer, unique and growing within one run of the camera.
``label``             what the detector called the object.
``confidence``        start: of the confirming sighting; end: the best sighting's.
``box``               ``[x1, y1, x2, y2]`` normalised to [0, 1] (start: confirming
                      sighting; end: best sighting, the one in the snapshot).
``time_ms``           wall-clock milliseconds: start: first sighting; end: last sighting.
``duration_ms``       end only: last sighting minus first sighting.
``reason``            end only: ``"lost"`` (not seen for ``track_timeout`` frames),
                      ``"source_lost"`` (the stream dropped while the track was live: the
                      camera saw nothing after ``time_ms``) or ``"stopped"`` (the
                      pipeline stopped while the track was live).
``best_time_ms``      end only: when the best sighting was made.
``snapshot_jpeg_b64`` end only, optional: base64 of a JPEG of the best sighting's
                      crop, at most ``snapshot_max_bytes`` before base64 (the image is
                      shrunk and compressed harder until it fits; omitted if it cannot).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from agents.camera.tracker import Track
from agents.detectors.base import Frame
from schemas.detections import Box
from schemas.errors import CodecError
from schemas.json_object import json_object

__all__ = ["EVENT_CONTENT_TYPE", "TrackEvent", "snapshot_jpeg"]

logger = logging.getLogger(__name__)

EVENT_CONTENT_TYPE = "application/json"
#: The longest side a snapshot starts from; larger crops are scaled down first.
SNAPSHOT_MAX_SIDE = 640
_QUALITIES = (85, 70, 55, 40)


def snapshot_jpeg(image: Frame, max_bytes: int) -> bytes | None:
    """A JPEG of ``image`` no larger than ``max_bytes``, or None if even a tiny one is larger.

    Tries falling quality first, then halves the picture, so a snapshot stays
    as sharp as the bound allows.
    """
    import cv2

    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return None
    scale = min(1.0, SNAPSHOT_MAX_SIDE / max(height, width))
    while True:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        scaled = image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        for quality in _QUALITIES:
            ok, encoded = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(encoded) <= max_bytes:
                return bytes(encoded.tobytes())
        if max(size) <= 16:
            return None
        scale /= 2


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One track start or end, as published (see the module docstring for each field)."""

    VERSION: ClassVar[int] = 1

    type: Literal["start", "end"]
    camera: str
    track_id: int
    label: str
    confidence: float
    box: Box
    time_ms: int
    duration_ms: int | None = None
    reason: str | None = None
    best_time_ms: int | None = None
    snapshot_jpeg: bytes | None = None

    def __post_init__(self) -> None:
        if self.type not in ("start", "end"):
            raise CodecError(f"event type must be 'start' or 'end', not {self.type!r}")
        if self.type == "end" and self.duration_ms is None:
            raise CodecError("an end event needs duration_ms")

    @classmethod
    def started(cls, camera: str, track: Track) -> TrackEvent:
        """The start event of a just-confirmed track."""
        return cls("start", camera, track.track_id, track.label, track.confidence, track.box,
                   track.first_ms)

    @classmethod
    def ended(cls, camera: str, track: Track, *, reason: str = "lost",
              snapshot_max_bytes: int | None = None) -> TrackEvent:
        """The end event of ``track``, with a snapshot of its best crop when a bound is given."""
        snapshot = None
        if snapshot_max_bytes is not None and track.best_crop is not None:
            snapshot = snapshot_jpeg(track.best_crop, snapshot_max_bytes)
            if snapshot is None:
                logger.debug("snapshot of track %d does not fit in %d bytes", track.track_id,
                             snapshot_max_bytes)
        return cls("end", camera, track.track_id, track.label, track.best_confidence,
                   track.best_box, track.last_ms, duration_ms=track.duration_ms, reason=reason,
                   best_time_ms=track.best_ms, snapshot_jpeg=snapshot)

    def to_json(self) -> dict[str, Any]:
        """The JSON object published (None fields left out)."""
        view: dict[str, Any] = {
            "type": self.type, "version": self.VERSION, "camera": self.camera,
            "track_id": self.track_id, "label": self.label,
            "confidence": round(self.confidence, 4),
            "box": [round(v, 5) for v in self.box], "time_ms": self.time_ms,
        }
        if self.duration_ms is not None:
            view["duration_ms"] = self.duration_ms
        if self.reason is not None:
            view["reason"] = self.reason
        if self.best_time_ms is not None:
            view["best_time_ms"] = self.best_time_ms
        if self.snapshot_jpeg is not None:
            view["snapshot_jpeg_b64"] = base64.b64encode(self.snapshot_jpeg).decode("ascii")
        return view

    def encode(self) -> bytes:
        """Compact UTF-8 JSON."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes | str) -> TrackEvent:
        """Parse a published event; unknown fields are ignored, missing or bad ones are CodecError."""
        data = json_object(payload, "track event")
        try:
            snapshot = data.get("snapshot_jpeg_b64")
            box = data["box"]
            if not isinstance(box, list) or len(box) != 4:
                raise CodecError(f"track event box must be 4 numbers, not {box!r}")
            return cls(
                type=data["type"], camera=str(data["camera"]), track_id=int(data["track_id"]),
                label=str(data["label"]), confidence=float(data["confidence"]),
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                time_ms=int(data["time_ms"]),
                duration_ms=None if data.get("duration_ms") is None else int(data["duration_ms"]),
                reason=data.get("reason"),
                best_time_ms=None if data.get("best_time_ms") is None else int(data["best_time_ms"]),
                snapshot_jpeg=None if snapshot is None else base64.b64decode(snapshot, validate=True),
            )
        except CodecError:
            raise
        except KeyError as exc:
            raise CodecError(f"track event lacks field {exc.args[0]!r}") from exc
        except (TypeError, ValueError, binascii.Error) as exc:
            raise CodecError(f"track event has a bad field: {exc}") from exc
