"""The contract of a detector backend (agents/detectors/base.py), checked for one ``type``.

A backend needs a model to run, so each registered type names an example
configuration in :data:`EXAMPLES` (a callable given a scratch directory); a
registered type without one fails its checks until it gets one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agents.detectors.base import DETECTORS, Detector, create_detector
from schemas.detections import Detection
from schemas.errors import ConfigError

__all__ = ["EXAMPLES", "yield_checks"]

PHOTOS = Path(__file__).parent.parent / "data" / "photos"
Check = Callable[[str, Path], None]


def _ssdlite(tmp: Path) -> dict[str, Any]:
    pytest.importorskip("onnxruntime")
    return {"threads": 1}  # the shipped person model


def _yolo(tmp: Path) -> dict[str, Any]:
    from tests.test_detectors import tiny_yolo  # an ONNX graph shaped like an Ultralytics export

    return {"model": str(tiny_yolo(tmp / "tiny.onnx", names="['cat', 'dog', 'person']")), "threads": 1}


#: The smallest working ``[cameras.detector]`` table of each backend (minus ``type``).
EXAMPLES: Mapping[str, Callable[[Path], dict[str, Any]]] = {"ssdlite": _ssdlite, "yolo": _yolo}


def example(kind: str, tmp: Path) -> dict[str, Any]:
    assert kind in EXAMPLES, f"detector backend {kind!r} has no example configuration in {__name__}"
    return {"type": kind, **EXAMPLES[kind](tmp)}


def frames() -> list[Any]:
    """Frames of several shapes: real photographs, a blank frame, noise, a non-contiguous view."""
    np = pytest.importorskip("numpy")
    cv2 = pytest.importorskip("cv2")
    photos = [cv2.imread(str(PHOTOS / name), cv2.IMREAD_COLOR) for name in ("astronaut.jpg", "coffee.jpg")]
    noise = np.random.default_rng(3).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    return [*photos, np.zeros((64, 128, 3), dtype=np.uint8), noise, photos[0][::2, ::2]]


def detect_all(kind: str, tmp: Path) -> list[list[Detection]]:
    detector = create_detector(example(kind, tmp))
    try:
        return [detector.detect(frame) for frame in frames()]
    finally:
        detector.close()


# -- the checks --------------------------------------------------------------------------------------


def check_builds_the_registered_class(kind: str, tmp: Path) -> None:
    """``type = kind`` builds the registered class, which names the labels it can report."""
    detector = create_detector(example(kind, tmp))
    try:
        assert type(detector) is DETECTORS.get(kind, "detector.type")
        assert isinstance(detector, Detector) and kind == detector.TYPE
        assert isinstance(detector.labels, tuple) and all(isinstance(x, str) for x in detector.labels)
    finally:
        detector.close()


def check_unknown_key_refused(kind: str, tmp: Path) -> None:
    """An operator's typo is a ConfigError naming the key (before any model is loaded)."""
    with pytest.raises(ConfigError, match="'no_such_key'"):
        create_detector({**example(kind, tmp), "no_such_key": 1})


def check_detections_are_normalised(kind: str, tmp: Path) -> None:
    """``detect`` gives Detections: boxes in [0, 1] with x1 <= x2 and y1 <= y2, a known label, no track."""
    detector = create_detector(example(kind, tmp))
    try:
        for frame in frames():
            found = detector.detect(frame)
            assert isinstance(found, list)
            for d in found:
                assert isinstance(d, Detection) and d.track_id is None
                x1, y1, x2, y2 = d.box
                assert 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0
                assert 0.0 <= d.confidence <= 1.0
                assert not detector.labels or d.label in detector.labels
    finally:
        detector.close()


def check_deterministic(kind: str, tmp: Path) -> None:
    """The same frame gives the same detections, by the same or by a second instance."""
    first = detect_all(kind, tmp)
    assert any(first), "no frame gave a detection: the check would prove nothing"
    assert detect_all(kind, tmp) == first


def check_frame_left_untouched(kind: str, tmp: Path) -> None:
    """``detect`` neither changes the frame nor keeps it."""
    detector = create_detector(example(kind, tmp))
    try:
        for frame in frames():
            before = frame.copy()
            detector.detect(frame)
            assert (frame == before).all()
    finally:
        detector.close()


def check_close_twice(kind: str, tmp: Path) -> None:
    """``close`` may be called more than once (a camera stopping after a failed restart)."""
    detector = create_detector(example(kind, tmp))
    detector.close()
    detector.close()


def yield_checks(kind: str) -> Iterator[Check]:
    """The checks every detector backend must pass."""
    yield check_builds_the_registered_class
    yield check_unknown_key_refused
    yield check_detections_are_normalised
    yield check_deterministic
    yield check_frame_left_untouched
    yield check_close_twice
