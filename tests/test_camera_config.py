"""Strict camera configuration: defaults, and errors that name the key."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agents.camera.config import CameraConfig, MotionConfig
from schemas.errors import ConfigError


def table(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "front", "source": "rtsp://cam/stream",
                            "detector": {"type": "ssd", "model": "m.onnx"}}
    base.update(overrides)
    return base


def test_defaults() -> None:
    config = CameraConfig.from_mapping(table())
    assert (config.fps, config.queue_size, config.motion, config.batch_interval) == (5.0, 2, None, 1.0)
    assert (config.track_timeout, config.track_min_hits, config.min_confidence) == (5, 2, 0.5)
    assert dict(config.detector) == {"type": "ssd", "model": "m.onnx"}
    assert config.state_name == "front_objects"


def test_full_table() -> None:
    config = CameraConfig.from_mapping(table(
        source=0, fps=0, loop=True, queue_size=4, batch_interval=0.5, batch_max_frames=10,
        min_confidence=0.3, labels=["person", "car"], track_timeout=3, track_iou=0.4,
        track_min_hits=1, snapshot=False, snapshot_max_bytes=4096,
        motion={"threshold": 30, "min_area": 0.01, "width": 80, "keepalive": 0}))
    assert config.source == 0 and config.labels == ("person", "car")
    assert config.motion == MotionConfig(threshold=30, min_area=0.01, width=80, keepalive=0.0)
    assert isinstance(config.fps, float)


@pytest.mark.parametrize(("overrides", "named"), [
    ({"fsp": 5}, "camera.fsp"),
    ({"fps": -1}, "camera: fps"),
    ({"fps": "fast"}, "camera: fps"),
    ({"queue_size": 0}, "camera: queue_size"),
    ({"queue_size": 2.5}, "camera: queue_size"),
    ({"loop": 1}, "camera.loop"),
    ({"min_confidence": 1.5}, "camera: min_confidence"),
    ({"labels": "person"}, "camera.labels"),
    ({"track_timeout": True}, "camera: track_timeout"),
    ({"motion": {"treshold": 3}}, "camera.motion.treshold"),
    ({"motion": {"min_area": 2}}, "camera.motion: min_area"),
    ({"motion": []}, "camera.motion"),
    ({"detector": "ssd"}, "camera.detector"),
    ({"name": "front door"}, "camera.name"),
    ({"source": ""}, "camera.source"),
    ({"source": -1}, "camera.source"),
    ({"reconnect_min_delay": 5, "reconnect_max_delay": 1}, "reconnect_min_delay"),
    # msgpack carries NaN and inf in an ``assign`` command: refused like any bad number
    ({"fps": math.inf}, "camera: fps must be a number"),
    ({"batch_interval": math.inf}, "camera: batch_interval must be a number"),
    ({"reconnect_max_delay": math.inf}, "camera: reconnect_max_delay must be a number"),
    ({"motion": {"keepalive": math.nan}}, "camera.motion: keepalive must be a number"),
])
def test_bad_values_name_the_key(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        CameraConfig.from_mapping(table(**overrides))


@pytest.mark.parametrize("missing", ["name", "source", "detector"])
def test_required_keys(missing: str) -> None:
    data = table()
    del data[missing]
    with pytest.raises(ConfigError, match=f"camera.{missing} is required"):
        CameraConfig.from_mapping(data)


def test_section_prefix_is_the_callers() -> None:
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.bogus"):
        CameraConfig.from_mapping(table(bogus=1), section="cameras[0]")
