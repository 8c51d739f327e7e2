"""Detection batches: what one camera saw in a run of frames, in one compact record.

Frame ``i`` of a batch has sequence number ``first_seq + i`` within the
publisher's sequence ``epoch``. Boxes are normalised ``(x1, y1, x2, y2)``
floats in [0, 1] (independent of the capture resolution, which can change).

The wire body is columnar (see FORMAT.md): per frame a time delta and a
detection count; per detection a label index, a confidence, four box
coordinates and a track id, with the floats in the smallest lossless form
(:mod:`schemas.float_columns`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from schemas.errors import CodecError
from schemas.float_columns import decode_float_column, encode_float_column
from schemas.record_base import (
    INT64_MAX,
    INT64_MIN,
    SequencedBatch,
    WireFields,
    check_device,
    check_int,
    check_name,
    check_text,
    check_tuple,
    check_unit_float,
    empty_map,
    freeze_extra,
    jsonable,
    register_record,
)

__all__ = ["Box", "Detection", "DetectionsBatch", "FrameDetections"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Detection:
    """One object in one frame: what, how sure, where, and which track it belongs to.

    ``box`` is ``(x1, y1, x2, y2)`` normalised to [0, 1] with ``x1 <= x2`` and
    ``y1 <= y2``; ``track_id`` is None when the detector does not track.
    """

    label: str
    confidence: float
    box: Box
    track_id: int | None = None

    def __post_init__(self) -> None:
        check_text("detection label", self.label, max_chars=128)
        confidence = self.confidence
        if type(confidence) is not float or not 0.0 <= confidence <= 1.0:
            object.__setattr__(self, "confidence",
                               check_unit_float(f"detection {self.label!r} confidence",
                                                confidence))
        track_id = self.track_id
        if track_id is not None and (type(track_id) is not int or not 0 <= track_id <= INT64_MAX):
            object.__setattr__(self, "track_id",
                               check_int(f"detection {self.label!r} track_id", track_id))
        box = self.box
        if type(box) is tuple and len(box) == 4:
            x1, y1, x2, y2 = box
            # The common case, a tuple of four floats in order, costs no conversion.
            if (type(x1) is float and type(y1) is float and type(x2) is float
                    and type(y2) is float and 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0):
                return
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise CodecError(f"detection {self.label!r} box must be (x1, y1, x2, y2), not "
                             f"{box!r}")
        x1, y1, x2, y2 = (check_unit_float(f"detection {self.label!r} box[{i}]", v)
                          for i, v in enumerate(box))
        if x1 > x2 or y1 > y2:
            raise CodecError(f"detection {self.label!r} box {box!r} needs x1 <= x2 and y1 <= y2")
        object.__setattr__(self, "box", (x1, y1, x2, y2))


def _check_detection(where: str, value: object) -> Detection:
    if type(value) is not Detection:
        raise CodecError(f"{where} must be a Detection, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class FrameDetections:
    """Everything detected in one frame (possibly nothing: an empty frame is news too)."""

    time_ms: int
    detections: tuple[Detection, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_ms", check_int("frame time_ms", self.time_ms))
        if type(self.detections) is not tuple or any(
                type(d) is not Detection for d in self.detections):
            object.__setattr__(self, "detections",
                               check_tuple("frame detections", self.detections,
                                           _check_detection))


def _check_frame(where: str, value: object) -> FrameDetections:
    if type(value) is not FrameDetections:
        raise CodecError(f"{where} must be a FrameDetections, not {type(value).__name__}")
    return value


@register_record
@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionsBatch(SequencedBatch[FrameDetections]):
    """A batch of one camera's frames, numbered ``first_seq``, ``first_seq + 1``, ..."""

    TYPE: ClassVar[str] = "detections"
    ITEM: ClassVar[str] = "frame"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"device", "camera", "epoch", "seq", "t0", "dt", "count", "labels", "label", "conf",
         "box", "track"})

    device: str
    camera: str
    epoch: int
    first_seq: int
    frames: tuple[FrameDetections, ...]
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_device("detections device", self.device)
        check_name("detections camera", self.camera)
        object.__setattr__(self, "epoch", check_int("detections epoch", self.epoch))
        object.__setattr__(self, "first_seq", check_int("detections first_seq", self.first_seq))
        object.__setattr__(self, "frames", check_tuple("detections frames", self.frames,
                                                       _check_frame))
        if self.first_seq + len(self.frames) > INT64_MAX:
            raise CodecError("detections first_seq + len(frames) overflows 64 bits")
        object.__setattr__(self, "extra", freeze_extra(DetectionsBatch, self.extra))

    def _items(self) -> tuple[FrameDetections, ...]:
        return self.frames

    def to_wire(self) -> dict[str, Any]:
        labels: dict[str, int] = {}
        deltas: list[int] = []
        counts: list[int] = []
        label_indices: list[int] = []
        confidences: list[float] = []
        coordinates: list[float] = []
        tracks: list[int | None] = []
        previous = t0 = self.frames[0].time_ms if self.frames else 0
        for frame in self.frames:
            deltas.append(frame.time_ms - previous)
            previous = frame.time_ms
            counts.append(len(frame.detections))
            for detection in frame.detections:
                index = labels.get(detection.label)
                if index is None:
                    index = labels[detection.label] = len(labels)
                label_indices.append(index)
                confidences.append(detection.confidence)
                coordinates.extend(detection.box)
                tracks.append(detection.track_id)
        return {"device": self.device, "camera": self.camera, "epoch": self.epoch,
                "seq": self.first_seq, "t0": t0, "dt": deltas, "count": counts,
                "labels": list(labels), "label": label_indices,
                "conf": encode_float_column(confidences),
                "box": encode_float_column(coordinates), "track": tracks}

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> DetectionsBatch:
        deltas = fields.get_int_list("dt", None, INT64_MIN, INT64_MAX)
        counts = fields.get_int_list("count", len(deltas), 0, INT64_MAX)
        total = sum(counts)
        labels = fields.get_str_list("labels")
        label_indices = fields.get_int_list("label", total, 0, len(labels) - 1)
        confidences = decode_float_column(fields.get_list("conf"), total,
                                          "detections record: wire key 'conf'")
        coordinates = decode_float_column(fields.get_list("box"), 4 * total,
                                          "detections record: wire key 'box'")
        tracks = fields.get_list("track", total)
        frames = []
        time_ms = fields.get_int("t0")
        start = 0
        for delta, count in zip(deltas, counts, strict=True):
            time_ms += delta
            detections = tuple(
                Detection(labels[label_indices[i]], confidences[i],
                          (coordinates[4 * i], coordinates[4 * i + 1],
                           coordinates[4 * i + 2], coordinates[4 * i + 3]),
                          tracks[i])
                for i in range(start, start + count))
            start += count
            frames.append(FrameDetections(time_ms, detections))
        return cls(device=fields.get_str("device"), camera=fields.get_str("camera"),
                   epoch=fields.get_int("epoch"), first_seq=fields.get_int("seq"),
                   frames=tuple(frames), extra=extra)

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "type": self.TYPE, "version": self.VERSION, "device": self.device,
            "camera": self.camera, "epoch": self.epoch, "first_seq": self.first_seq,
            "frames": [{"seq": seq, "time_ms": frame.time_ms,
                        "detections": [{"label": d.label, "confidence": d.confidence,
                                        "box": list(d.box), "track_id": d.track_id}
                                       for d in frame.detections]}
                       for seq, frame in self.numbered()],
        }
        if self.extra:
            view["extra"] = jsonable(self.extra)
        return view
