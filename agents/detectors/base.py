"""The detector interface and the registry that picks a backend by its ``type``.

A backend is a class registered under a name, one module in
``agents/detectors/plugins/``; the camera pipeline builds it from the
operator's ``[cameras.detector]`` table with :func:`create_detector`, so adding
a backend is one new file and never touches the pipeline. Backends import their heavy
dependencies (onnxruntime, ultralytics) lazily, inside ``from_config``, so a
gateway that runs no camera never needs them.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from broker.config_values import check_keys
from broker.plugin_registry import PluginRegistry
from schemas.detections import Detection

__all__ = ["DETECTORS", "Detector", "Frame", "check_keys", "create_detector", "detector_types",
           "register_detector"]

logger = logging.getLogger(__name__)

#: A BGR image as OpenCV gives it: ``uint8`` array of shape (height, width, 3).
Frame = npt.NDArray[np.uint8]


class Detector(abc.ABC):
    """Finds objects in one frame.

    ``detect`` returns boxes normalised to [0, 1] as ``(x1, y1, x2, y2)`` with
    ``track_id=None`` (tracking is the pipeline's job, not the backend's). It
    may be called from one worker thread at a time; it must not keep the frame.
    """

    #: The ``type`` value that selects this backend in configuration.
    TYPE: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, options: Mapping[str, Any]) -> Detector:
        """Build from the ``[cameras.detector]`` table minus ``type``; unknown keys are errors."""

    @abc.abstractmethod
    def detect(self, frame: Frame) -> list[Detection]:
        """The objects in ``frame`` (BGR, uint8, H x W x 3)."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels this backend can report (for discovery and validation)."""
        return ()

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what the backend holds (sessions, threads)."""


#: The detector backends by ``type``, found in agents/detectors/plugins/.
DETECTORS: PluginRegistry[Detector] = PluginRegistry("detector", "agents.detectors.plugins")
#: Class decorator: make a backend selectable as ``type = cls.TYPE``.
register_detector = DETECTORS.register


def detector_types() -> list[str]:
    """The registered backend names, sorted."""
    return DETECTORS.names()


def create_detector(config: Mapping[str, Any]) -> Detector:
    """The backend named by ``config["type"]`` built from the rest of ``config``."""
    cls = DETECTORS.lookup(config, "detector")
    return cls.from_config({k: v for k, v in config.items() if k != "type"})
