"""Motion gating on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from agents.camera.config import MotionConfig
from agents.camera.motion import MotionGate

cv2 = pytest.importorskip("cv2")


def dark(height: int = 120, width: int = 160) -> np.ndarray:
    return np.full((height, width, 3), 20, np.uint8)


def with_square(x: int, y: int, side: int = 30) -> np.ndarray:
    frame = dark()
    frame[y:y + side, x:x + side] = 255
    return frame


def test_first_frame_counts_as_motion_and_a_still_scene_does_not() -> None:
    gate = MotionGate(MotionConfig())
    assert gate.has_motion(dark())
    assert not gate.has_motion(dark())
    assert gate.last_fraction == 0.0


def test_a_moving_square_is_motion() -> None:
    gate = MotionGate(MotionConfig())
    gate.has_motion(with_square(10, 10))
    assert gate.has_motion(with_square(40, 10))
    assert gate.last_fraction > 0.05


def test_sensor_noise_below_the_threshold_is_not_motion() -> None:
    rng = np.random.default_rng(1)
    gate = MotionGate(MotionConfig(threshold=25))
    gate.has_motion(dark())
    noisy = np.clip(dark().astype(np.int16) + rng.integers(-8, 9, dark().shape), 0, 255)
    assert not gate.has_motion(noisy.astype(np.uint8))


def test_a_change_smaller_than_min_area_is_not_motion() -> None:
    gate = MotionGate(MotionConfig(min_area=0.05))
    gate.has_motion(dark())
    small = dark()
    small[50:56, 50:56] = 255  # 36 of 19200 pixels
    assert not gate.has_motion(small)
    assert 0 < gate.last_fraction < 0.05


def test_the_same_scene_at_a_higher_resolution_is_still_but_a_new_shape_is_motion() -> None:
    gate = MotionGate(MotionConfig())
    gate.has_motion(dark())
    assert not gate.has_motion(dark(240, 320))
    assert gate.has_motion(dark(90, 160))


def test_reset_makes_the_next_frame_motion() -> None:
    gate = MotionGate(MotionConfig())
    gate.has_motion(dark())
    gate.reset()
    assert gate.has_motion(dark())
