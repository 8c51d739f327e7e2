"""``type = "ssdlite"``: the default detector, a person finder that needs no download.

SSDLite-MobileNetV2 trained for one class, person (MIT licence; see
``agents/models/README.md`` for where it comes from and how it was converted).
The shipped ONNX file takes a 300 x 300 RGB image scaled to [-1, 1] and returns
every anchor's decoded box and sigmoid score; this module resizes, normalises,
thresholds and runs the non-maximum suppression that the original TensorFlow
graph did in a while-loop. About 10 ms a frame on two cores.

Options (all optional)::

    [cameras.detector]
    type = "ssdlite"
    model = "/path/to/ssdlite.onnx"   # default: the shipped model
    threshold = 0.5                   # minimum person score reported
    iou = 0.6                         # NMS overlap above which the weaker box goes (the original's value)
    max_detections = 50
    threads = 2                       # onnxruntime intra-op threads
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from agents.detectors.base import Detector, Frame, check_keys, register_detector
from agents.detectors.boxes import nms
from agents.detectors.frames import as_bgr
from agents.detectors.onnx_session import open_session
from agents.detectors.options import float_option, int_option, path_option
from schemas.detections import Detection
from schemas.errors import ConfigError

__all__ = ["DEFAULT_MODEL", "SSDLiteDetector"]

logger = logging.getLogger(__name__)

#: The model shipped with edgebus (about 6 MB).
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "ssdlite_mobilenet_v2_person.onnx"

_OPTIONS: dict[str, object] = {"model": DEFAULT_MODEL, "threshold": 0.5, "iou": 0.6,
                               "max_detections": 50, "threads": 2}
_WHERE = "detector ssdlite"


@register_detector
class SSDLiteDetector(Detector):
    """Finds people with the shipped SSDLite-MobileNetV2 model in onnxruntime."""

    TYPE: ClassVar[str] = "ssdlite"

    def __init__(self, model: Path = DEFAULT_MODEL, *, threshold: float = 0.5, iou: float = 0.6,
                 max_detections: int = 50, threads: int = 2) -> None:
        self._session: Any = open_session(_WHERE, model, threads)
        inputs = self._session.get_inputs()
        outputs = [output.name for output in self._session.get_outputs()]
        shape = inputs[0].shape if len(inputs) == 1 else None
        if (shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:3])
                or shape[3] != 3 or sorted(outputs) != ["boxes", "scores"]):
            raise ConfigError(f"{_WHERE}: {str(model)!r} is not an SSDLite model converted by "
                              f"agents/models/convert_ssdlite.py (inputs {[i.shape for i in inputs]}, "
                              f"outputs {outputs})")
        self._input_name: str = inputs[0].name
        self._size: tuple[int, int] = (int(shape[2]), int(shape[1]))  # (width, height) for cv2
        self._threshold = threshold
        self._iou = iou
        self._max_detections = max_detections

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> SSDLiteDetector:
        """Build from ``[cameras.detector]`` options (see the module docstring)."""
        check_keys(_WHERE, options, _OPTIONS)
        return cls(
            path_option(_WHERE, options, "model", DEFAULT_MODEL),
            threshold=float_option(_WHERE, options, "threshold", 0.5, low=0.0, high=1.0),
            iou=float_option(_WHERE, options, "iou", 0.6, low=0.0, high=1.0, low_open=True),
            max_detections=int_option(_WHERE, options, "max_detections", 50, low=1, high=10_000),
            threads=int_option(_WHERE, options, "threads", 2, low=1, high=256),
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return ("person",)

    def preprocess(self, frame: Frame) -> npt.NDArray[np.float32]:
        """The model's input for ``frame``: 1 x H x W x 3 RGB float32 in [-1, 1]."""
        import cv2

        resized = cv2.resize(as_bgr(frame), self._size, interpolation=cv2.INTER_LINEAR)
        rgb = resized[:, :, ::-1].astype(np.float32)
        rgb *= np.float32(2.0 / 255.0)
        rgb -= np.float32(1.0)
        return rgb[np.newaxis]

    def postprocess(self, boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]) -> list[Detection]:
        """Detections from the model's per-anchor outputs: threshold, clip, reorder, NMS."""
        person = scores[0, :, 1]
        hits = np.flatnonzero(person >= self._threshold)
        # The model gives (ymin, xmin, ymax, xmax); edgebus boxes are (x1, y1, x2, y2).
        found = np.clip(boxes[0, hits][:, [1, 0, 3, 2]], 0.0, 1.0).astype(np.float64)
        solid = (found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])
        found = found[solid]
        confidence = person[hits][solid].astype(np.float64)
        keep = nms(found, confidence, self._iou, limit=self._max_detections)
        return [Detection("person", float(confidence[i]),
                          (float(found[i, 0]), float(found[i, 1]), float(found[i, 2]), float(found[i, 3])))
                for i in keep]

    def detect(self, frame: Frame) -> list[Detection]:
        boxes, scores = self._session.run(["boxes", "scores"], {self._input_name: self.preprocess(frame)})
        return self.postprocess(boxes, scores)

    def close(self) -> None:
        self._session = None
