"""Accepting the frames cameras actually deliver: BGR, and also grey or BGRA."""

from __future__ import annotations

import numpy as np

from agents.detectors.base import Frame

__all__ = ["as_bgr"]


def as_bgr(frame: Frame) -> Frame:
    """``frame`` as ``uint8`` H x W x 3 BGR; grey (H x W or H x W x 1) and BGRA are converted.

    Raises ValueError for anything else: that is a bug in the caller, not a
    condition a running camera can recover from.
    """
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, not {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        grey = frame.reshape(frame.shape[0], frame.shape[1], 1)
        return np.ascontiguousarray(np.broadcast_to(grey, (*grey.shape[:2], 3)))
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, :3])
    raise ValueError(f"frame must be H x W x 3 (BGR), not shape {frame.shape}")
