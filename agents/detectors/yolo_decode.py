"""YOLO pre- and post-processing in numpy: letterbox in, Ultralytics' raw output back to frame boxes.

An Ultralytics ONNX export (YOLOv8, YOLO11) takes a square RGB image scaled to
[0, 1], the frame resized to fit and padded with grey (the "letterbox"), and
returns one tensor of shape (1, 4 + classes, anchors): per anchor a centre-size
box in input pixels and one already-sigmoided score per class, before NMS. The
functions here are pure apart from the resize, so the geometry is tested on
made-up tensors without any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agents.detectors.base import Frame
from agents.detectors.boxes import nms

__all__ = ["Decoded", "Letterbox", "decode", "letterbox"]

#: Ultralytics pads with this grey; using the same value keeps scores identical to theirs.
PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was placed into the model input: scaled by ``scale``, shifted by the padding."""

    scale: float
    pad_x: int
    pad_y: int
    frame_width: int
    frame_height: int


@dataclass(frozen=True, slots=True)
class Decoded:
    """Surviving detections: boxes normalised to the frame as (x1, y1, x2, y2), best first."""

    boxes: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    classes: npt.NDArray[np.intp]


def letterbox(frame: Frame, width: int, height: int) -> tuple[npt.NDArray[np.float32], Letterbox]:
    """The model input for ``frame`` (1 x 3 x height x width, RGB in [0, 1]) and its placement."""
    import cv2

    frame_height, frame_width = frame.shape[:2]
    scale = min(width / frame_width, height / frame_height)
    new_width = max(1, round(frame_width * scale))
    new_height = max(1, round(frame_height * scale))
    # The same split of odd padding as Ultralytics' LetterBox, so boxes agree to the pixel.
    pad_x = round((width - new_width) / 2 - 0.1)
    pad_y = round((height - new_height) / 2 - 0.1)
    canvas = np.full((height, width, 3), PAD_VALUE, dtype=np.uint8)
    fitted: npt.NDArray[np.generic] = frame
    if (new_width, new_height) != (frame_width, frame_height):
        fitted = cv2.resize(frame, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    canvas[pad_y:pad_y + new_height, pad_x:pad_x + new_width] = fitted
    tensor = canvas[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    tensor *= np.float32(1.0 / 255.0)
    return tensor[np.newaxis], Letterbox(scale, pad_x, pad_y, frame_width, frame_height)


def decode(output: npt.NDArray[np.floating], placement: Letterbox, *, classes: int, threshold: float,
           iou: float, limit: int) -> Decoded:
    """Threshold, un-letterbox and class-aware NMS of one image's raw output.

    ``output`` is (1, 4 + classes, anchors) as Ultralytics exports it, or the
    transposed (1, anchors, 4 + classes) that some re-exports produce.
    """
    channels = 4 + classes
    if output.ndim != 3 or output.shape[0] != 1 or channels not in output.shape[1:]:
        raise ValueError(f"YOLO output of shape {output.shape} does not hold 4 box values + {classes} "
                         f"class scores per anchor")
    rows = output[0].T if output.shape[1] == channels else output[0]
    class_scores = rows[:, 4:]
    best_class = class_scores.argmax(axis=1)
    best_score = class_scores[np.arange(len(rows)), best_class]
    hits = np.flatnonzero(best_score >= threshold)
    centre_size = rows[hits, :4].astype(np.float64)
    half_w = centre_size[:, 2] / 2.0
    half_h = centre_size[:, 3] / 2.0
    boxes = np.stack([centre_size[:, 0] - half_w, centre_size[:, 1] - half_h,
                      centre_size[:, 0] + half_w, centre_size[:, 1] + half_h], axis=1)
    # Undo the letterbox: input pixels -> frame pixels -> [0, 1] of the frame.
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - placement.pad_x) / placement.scale / placement.frame_width
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - placement.pad_y) / placement.scale / placement.frame_height
    np.clip(boxes, 0.0, 1.0, out=boxes)
    solid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[solid]
    scores = best_score[hits][solid].astype(np.float64)
    labels = best_class[hits][solid].astype(np.intp)
    keep = nms(boxes, scores, iou, classes=labels, limit=limit)
    return Decoded(boxes[keep], scores[keep], labels[keep])
