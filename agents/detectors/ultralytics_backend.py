"""YOLO ``.pt`` models through the ``ultralytics`` package (the ``[yolo]`` extra, which brings torch).

Chosen by :class:`agents.detectors.plugins.yolo.YoloDetector` when ``model`` ends in
``.pt``. Heavier and slower than the ONNX path (about 100 ms against 54 ms a
640 x 640 frame for YOLOv8n on two cores) but takes any model Ultralytics can
load, without an export step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from agents.detectors.base import Detector, Frame
from agents.detectors.frames import as_bgr
from schemas.detections import Detection
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from agents.detectors.plugins.yolo import YoloSettings

__all__ = ["UltralyticsDetector"]

logger = logging.getLogger(__name__)

_WHERE = "detector yolo"


class UltralyticsDetector(Detector):
    """Runs a YOLO ``.pt`` model with Ultralytics on the CPU."""

    TYPE: ClassVar[str] = "yolo"

    def __init__(self, settings: YoloSettings) -> None:
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise ConfigError(
                f"{_WHERE}: model = {str(settings.model)!r} is a PyTorch file, which needs the ultralytics "
                f"package: pip install 'edgebus[yolo]' — or export it to ONNX "
                f"(yolo export model={settings.model.name} format=onnx) and point model at the .onnx "
                f"file") from exc
        import torch  # present whenever ultralytics is: it depends on it

        self._settings = settings
        # Ultralytics would download a missing file it knows by name; path_option already made sure
        # the file exists, so this only ever loads from disk.
        torch.set_num_threads(settings.threads)
        try:
            self._model: Any = YOLO(str(settings.model), task="detect")
        except Exception as exc:  # ultralytics and torch raise many unrelated types for a bad file
            raise ConfigError(f"{_WHERE}: cannot load model {str(settings.model)!r}: {exc}") from exc
        names = self._model.names
        model_labels = tuple(names[i] for i in range(len(names)))
        if settings.labels is not None and len(settings.labels) != len(model_labels):
            raise ConfigError(f"{_WHERE}: labels has {len(settings.labels)} names but the model has "
                              f"{len(model_labels)} classes")
        self._labels = settings.labels or model_labels

    @classmethod
    def from_config(cls, options: Any) -> Detector:
        """Built through ``type = "yolo"`` with a ``.pt`` model; see :mod:`agents.detectors.plugins.yolo`."""
        from agents.detectors.plugins.yolo import YoloDetector

        return YoloDetector.from_config(options)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def detect(self, frame: Frame) -> list[Detection]:
        extra = {"imgsz": self._settings.input_size} if self._settings.input_size else {}
        (result,) = self._model.predict(as_bgr(frame), conf=self._settings.threshold, iou=self._settings.iou,
                                        max_det=self._settings.max_detections, device="cpu", verbose=False,
                                        **extra)
        boxes = result.boxes
        coords = boxes.xyxyn.cpu().numpy().clip(0.0, 1.0)
        scores = boxes.conf.cpu().numpy()
        classes = boxes.cls.cpu().numpy().astype(int)
        return [Detection(self._labels[c], float(s), (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
                for b, s, c in zip(coords, scores, classes, strict=True)]

    def close(self) -> None:
        self._model = None
