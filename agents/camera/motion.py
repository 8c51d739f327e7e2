"""Motion gating: run the detector only when the picture changed.

Most of the day a fixed camera looks at a still scene, and inference is the
expensive part of the pipeline. Each frame is shrunk to a small grey image
(``width`` pixels wide, area-averaged and blurred so sensor noise and JPEG
artefacts cancel) and compared with the previous one; a pixel *changed* when
its grey level moved by at least ``threshold``, and the frame *has motion*
when at least ``min_area`` of the pixels changed. The first frame always
counts as motion (there is nothing to compare with).

The comparison is frame to frame, so a change of lighting triggers a few
detections and then settles. The pipeline still detects when a track is
waiting to be confirmed or ended, and at least every ``keepalive`` seconds.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from agents.camera.config import MotionConfig
from agents.detectors.base import Frame

__all__ = ["MotionGate"]

logger = logging.getLogger(__name__)


class MotionGate:
    """Says whether a frame differs enough from the previous one to be worth detecting."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._previous: npt.NDArray[np.uint8] | None = None
        #: The fraction of changed pixels in the last frame compared (for tuning ``min_area``).
        self.last_fraction = 0.0
        self.frames = 0
        self.skipped = 0

    def _small_grey(self, frame: Frame) -> npt.NDArray[np.uint8]:
        import cv2

        height, width = frame.shape[:2]
        small_width = min(self.config.width, width)
        small_height = max(1, round(height * small_width / width))
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(grey, (small_width, small_height), interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.GaussianBlur(small, (5, 5), 0), dtype=np.uint8)

    def has_motion(self, frame: Frame) -> bool:
        """True when ``frame`` changed enough from the previous one (which it then replaces)."""
        self.frames += 1
        grey = self._small_grey(frame)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            self.last_fraction = 1.0  # first frame, or the resolution changed
            return True
        changed = np.abs(grey.astype(np.int16) - previous.astype(np.int16)) >= self.config.threshold
        self.last_fraction = float(changed.mean())
        return self.last_fraction >= self.config.min_area

    def note_skipped(self) -> None:
        """Count a frame the pipeline did not detect on."""
        self.skipped += 1

    def reset(self) -> None:
        """Forget the previous frame (after a reconnect the next frame counts as motion)."""
        self._previous = None
