"""``type = "yolo"``: an operator-supplied YOLO model, ONNX (no torch) or Ultralytics ``.pt``.

An ``.onnx`` file exported by Ultralytics (``yolo export model=yolov8n.pt
format=onnx``) runs in onnxruntime with our own letterbox, decoding and NMS
(:mod:`agents.detectors.yolo_decode`): the light path for a Raspberry Pi. A
``.pt`` file goes through the ``ultralytics`` package (``pip install
'edgebus[yolo]'``, which brings torch) — see
:mod:`agents.detectors.ultralytics_backend`.

Class names come from ``labels`` when given, else from the ``names`` the
Ultralytics exporter writes into the ONNX metadata, else the 80 COCO classes.

Options::

    [cameras.detector]
    type = "yolo"
    model = "/var/lib/edgebus/yolov8n.onnx"   # required; .onnx or .pt
    threshold = 0.5            # minimum class score reported
    iou = 0.5                  # class-aware NMS overlap
    max_detections = 50
    threads = 2                # onnxruntime intra-op threads (torch threads for .pt)
    input_size = 640           # only for models exported with a dynamic input size
    labels = ["person", ...]   # overrides the model's class names
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agents.detectors.base import Detector, Frame, check_keys, register_detector
from agents.detectors.coco import COCO_LABELS
from agents.detectors.frames import as_bgr
from agents.detectors.onnx_session import metadata, open_session
from agents.detectors.options import float_option, int_option, labels_option, path_option
from agents.detectors.yolo_decode import decode, letterbox
from schemas.detections import Detection
from schemas.errors import ConfigError

__all__ = ["YoloDetector", "YoloSettings", "names_from_metadata"]

logger = logging.getLogger(__name__)

_WHERE = "detector yolo"
_OPTIONS: dict[str, object] = {"model": None, "threshold": 0.5, "iou": 0.5, "max_detections": 50,
                               "threads": 2, "input_size": None, "labels": None}


class YoloSettings:
    """The validated ``[cameras.detector]`` options, shared by the ONNX and the Ultralytics paths."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        check_keys(_WHERE, options, _OPTIONS)
        self.model: Path = path_option(_WHERE, options, "model")
        self.threshold = float_option(_WHERE, options, "threshold", 0.5, low=0.0, high=1.0)
        self.iou = float_option(_WHERE, options, "iou", 0.5, low=0.0, high=1.0, low_open=True)
        self.max_detections = int_option(_WHERE, options, "max_detections", 50, low=1, high=10_000)
        self.threads = int_option(_WHERE, options, "threads", 2, low=1, high=256)
        self.input_size: int | None = (
            int_option(_WHERE, options, "input_size", 640, low=32, high=8192)
            if options.get("input_size") is not None else None)
        if self.input_size is not None and self.input_size % 32:
            raise ConfigError(f"{_WHERE}: input_size must be a multiple of 32 (the model's largest stride), "
                              f"not {self.input_size}")
        self.labels = labels_option(_WHERE, options, "labels")


def names_from_metadata(props: Mapping[str, str]) -> tuple[str, ...] | None:
    """Class names from Ultralytics' ``names`` metadata (``"{0: 'person', ...}"``), or None."""
    text = props.get("names")
    if not text:
        return None
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        logger.warning("ignoring unreadable 'names' metadata in the YOLO model: %.80r", text)
        return None
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if isinstance(names, list | tuple) and names and all(isinstance(n, str) and n for n in names):
        return tuple(names)
    logger.warning("ignoring 'names' metadata that is not a list of class names: %.80r", text)
    return None


@register_detector
class YoloDetector(Detector):
    """Runs an Ultralytics-exported YOLO ONNX model with onnxruntime and numpy."""

    TYPE: ClassVar[str] = "yolo"

    def __init__(self, settings: YoloSettings) -> None:
        self._settings = settings
        self._session: Any = open_session(_WHERE, settings.model, settings.threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ConfigError(f"{_WHERE}: {str(settings.model)!r} does not look like a YOLO export "
                              f"(inputs {[(i.name, i.shape) for i in inputs]})")
        props = metadata(self._session)
        self._input_name: str = inputs[0].name
        self._input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self._width, self._height = self._input_size(inputs[0].shape, props)
        self._labels = settings.labels or names_from_metadata(props) or COCO_LABELS
        self._check_output_shape()
        logger.info("%s: %s, input %dx%d, %d classes", _WHERE, settings.model, self._width, self._height,
                    len(self._labels))

    def _input_size(self, shape: list[Any], props: Mapping[str, str]) -> tuple[int, int]:
        """(width, height) of the model input: fixed by the model, else ``input_size``, else its metadata."""
        height, width = shape[2], shape[3]
        wanted = self._settings.input_size
        if isinstance(height, int) and isinstance(width, int):
            if wanted is not None and (wanted, wanted) != (width, height):
                raise ConfigError(f"{_WHERE}: input_size = {wanted} but {str(self._settings.model)!r} "
                                  f"takes a fixed {width}x{height} input; drop input_size or re-export")
            return width, height
        if wanted is not None:
            return wanted, wanted
        try:
            size = ast.literal_eval(props.get("imgsz", "[640, 640]"))
            return int(size[1]), int(size[0])
        except (ValueError, SyntaxError, TypeError, IndexError):
            return 640, 640

    def _check_output_shape(self) -> None:
        """Refuse at start-up, not on the first frame, a model whose output does not fit the labels."""
        outputs = self._session.get_outputs()
        shape = outputs[0].shape
        channels = 4 + len(self._labels)
        if len(shape) != 3 or (shape[2] == 6 and channels != 6):
            raise ConfigError(f"{_WHERE}: output of shape {shape} is not an Ultralytics YOLO export "
                              f"(1, 4 + classes, anchors); models exported with nms=True (1, N, 6) are not "
                              f"supported: re-export without it")
        sizes = [d for d in shape[1:] if isinstance(d, int)]  # a dynamic export names some axes
        if sizes and channels not in sizes:
            source = "labels" if self._settings.labels else "the model's class names"
            raise ConfigError(f"{_WHERE}: output shape {shape} has no axis of 4 + {len(self._labels)} "
                              f"(from {source}); set labels to the model's {min(sizes) - 4} class names")

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Detector:
        """The ONNX backend for ``.onnx``, the Ultralytics one for ``.pt`` (see the module docstring)."""
        settings = YoloSettings(options)
        if settings.model.suffix.lower() == ".pt":
            from agents.detectors.ultralytics_backend import UltralyticsDetector

            return UltralyticsDetector(settings)
        return cls(settings)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def detect(self, frame: Frame) -> list[Detection]:
        tensor, placement = letterbox(as_bgr(frame), self._width, self._height)
        feeds = {self._input_name: tensor.astype(self._input_dtype, copy=False)}
        output = self._session.run(None, feeds)[0]
        found = decode(np.asarray(output, dtype=np.float32), placement, classes=len(self._labels),
                       threshold=self._settings.threshold, iou=self._settings.iou,
                       limit=self._settings.max_detections)
        return [Detection(self._labels[int(c)], float(s),
                          (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
                for b, s, c in zip(found.boxes, found.scores, found.classes, strict=True)]

    def close(self) -> None:
        self._session = None
