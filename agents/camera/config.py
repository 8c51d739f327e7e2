"""One camera's operator configuration, checked strictly: a typo is an error naming the key.

A camera is one ``[[cameras]]`` table of the agent's configuration file::

    [[cameras]]
    name = "front"                 # required; one topic level ([A-Za-z0-9_.-])
    source = "rtsp://cam/stream"   # required; see agents.camera.sources
    fps = 5.0                      # frames analysed per second at most; 0 = as fast as possible
    loop = false                   # replay a file or image folder when it ends
    queue_size = 2                 # frames waiting for the detector; the oldest is dropped
    batch_interval = 1.0           # seconds of frames per detections batch ...
    batch_max_frames = 50          # ... or this many frames, whichever comes first
    min_confidence = 0.5           # detections below this are ignored
    labels = ["person", "car"]     # only these labels (empty or absent: all)
    track_timeout = 5              # analysed frames a track may go unseen before it ends
    track_iou = 0.3                # overlap needed to continue a track
    track_min_hits = 2             # sightings before a track is announced
    snapshot = true                # attach a JPEG of the best sighting to end events
    snapshot_max_bytes = 32768     # JPEG size bound (before base64)
    reconnect_min_delay = 0.5      # seconds; a dropped stream is reopened with backoff
    reconnect_max_delay = 5.0     # the back-off cap: a stream that is back is seen within this

    [cameras.motion]               # absent: every frame goes to the detector
    threshold = 25                 # grey-level change (0-255) that counts as a changed pixel
    min_area = 0.002               # fraction of changed pixels that counts as motion
    width = 160                    # width of the grey image compared
    keepalive = 10.0               # seconds: detect at least this often even when still

    [cameras.detector]             # required; passed to agents.detectors.create_detector
    type = "..."
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from broker.config_values import float_option, int_option
from schemas.errors import ConfigError, TopicError
from schemas.topics import NAME_MAX_CHARS, validate_name

__all__ = ["CameraConfig", "MotionConfig", "STATE_SUFFIX"]

#: The retained object-count state of camera ``front`` is ``state/front_objects``.
STATE_SUFFIX = "_objects"


def _number(section: str, key: str, value: Any, *, minimum: float, maximum: float = math.inf,
            integer: bool = False) -> Any:
    """``value`` through the shared readers: a finite number (bools are not) in range.

    Cameras are also configured over the bus (``assign``), where msgpack can carry NaN and inf.
    """
    if integer:
        return int_option(section, {key: value}, key, 0, low=int(minimum), high=maximum)
    return float_option(section, {key: value}, key, 0.0, low=minimum, high=maximum)


def _check_known(section: str, data: Mapping[str, Any], known: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section} must be a table, not {type(data).__name__}")
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}; known keys: {', '.join(sorted(known))}")


@dataclass(frozen=True, slots=True)
class MotionConfig:
    """Motion gating: detect only when enough pixels changed (see :mod:`agents.camera.motion`)."""

    threshold: int = 25
    min_area: float = 0.002
    width: int = 160
    keepalive: float = 10.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, section: str = "motion") -> MotionConfig:
        """Build from a ``[cameras.motion]`` table, naming any unknown or bad key."""
        _check_known(section, data, {f.name for f in fields(cls)})
        defaults = cls()
        return cls(
            threshold=_number(section, "threshold", data.get("threshold", defaults.threshold),
                              minimum=1, maximum=255, integer=True),
            min_area=_number(section, "min_area", data.get("min_area", defaults.min_area),
                             minimum=0.0, maximum=1.0),
            width=_number(section, "width", data.get("width", defaults.width), minimum=8,
                          maximum=4096, integer=True),
            keepalive=_number(section, "keepalive", data.get("keepalive", defaults.keepalive),
                              minimum=0.0),
        )


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """Everything the pipeline of one camera needs (the module docstring lists the keys)."""

    name: str
    source: int | str
    #: The ``[cameras.detector]`` table for :func:`agents.detectors.create_detector`.
    detector: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    fps: float = 5.0
    loop: bool = False
    queue_size: int = 2
    motion: MotionConfig | None = None
    batch_interval: float = 1.0
    batch_max_frames: int = 50
    min_confidence: float = 0.5
    labels: tuple[str, ...] = ()
    track_timeout: int = 5
    track_iou: float = 0.3
    track_min_hits: int = 2
    snapshot: bool = True
    snapshot_max_bytes: int = 32_768
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 5.0

    @property
    def state_name(self) -> str:
        """The ``state/{name}`` topic level carrying this camera's object counts."""
        return f"{self.name}{STATE_SUFFIX}"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, section: str = "camera") -> CameraConfig:
        """Build from a parsed ``[[cameras]]`` table; errors name ``section.key``."""
        _check_known(section, data, {f.name for f in fields(cls)})
        for key in ("name", "source", "detector"):
            if key not in data:
                raise ConfigError(f"{section}.{key} is required")
        name = data["name"]
        if not isinstance(name, str):
            raise ConfigError(f"{section}.name must be a string, not {name!r}")
        try:
            validate_name(name, "camera name")
        except TopicError as exc:
            raise ConfigError(f"{section}.name: {exc}") from exc
        if len(name) + len(STATE_SUFFIX) > NAME_MAX_CHARS:
            raise ConfigError(f"{section}.name is too long ({len(name)} characters)")
        source = data["source"]
        if isinstance(source, bool) or not isinstance(source, int | str) or source == "":
            raise ConfigError(f"{section}.source must be a device index, a path or a URL, "
                              f"not {source!r}")
        if isinstance(source, int) and source < 0:
            raise ConfigError(f"{section}.source device index must be >= 0, not {source}")
        detector = data["detector"]
        if not isinstance(detector, Mapping):
            raise ConfigError(f"{section}.detector must be a table, not {detector!r}")
        motion_table = data.get("motion")
        motion = (None if motion_table is None
                  else MotionConfig.from_mapping(motion_table, section=f"{section}.motion"))
        labels = data.get("labels", ())
        if isinstance(labels, str) or not isinstance(labels, list | tuple) or not all(
                isinstance(label, str) and label for label in labels):
            raise ConfigError(f"{section}.labels must be a list of label names, not {labels!r}")
        d = cls(name=name, source=0)

        def flag(key: str, default: bool) -> bool:
            value = data.get(key, default)
            if not isinstance(value, bool):
                raise ConfigError(f"{section}.{key} must be true or false, not {value!r}")
            return value

        config = cls(
            name=name,
            source=source,
            detector=MappingProxyType(dict(detector)),
            fps=_number(section, "fps", data.get("fps", d.fps), minimum=0.0),
            loop=flag("loop", d.loop),
            queue_size=_number(section, "queue_size", data.get("queue_size", d.queue_size),
                               minimum=1, maximum=1000, integer=True),
            motion=motion,
            batch_interval=_number(section, "batch_interval",
                                   data.get("batch_interval", d.batch_interval), minimum=0.0),
            batch_max_frames=_number(section, "batch_max_frames",
                                     data.get("batch_max_frames", d.batch_max_frames),
                                     minimum=1, maximum=10_000, integer=True),
            min_confidence=_number(section, "min_confidence",
                                   data.get("min_confidence", d.min_confidence),
                                   minimum=0.0, maximum=1.0),
            labels=tuple(labels),
            track_timeout=_number(section, "track_timeout",
                                  data.get("track_timeout", d.track_timeout),
                                  minimum=1, integer=True),
            track_iou=_number(section, "track_iou", data.get("track_iou", d.track_iou),
                              minimum=0.01, maximum=1.0),
            track_min_hits=_number(section, "track_min_hits",
                                   data.get("track_min_hits", d.track_min_hits),
                                   minimum=1, integer=True),
            snapshot=flag("snapshot", d.snapshot),
            snapshot_max_bytes=_number(section, "snapshot_max_bytes",
                                       data.get("snapshot_max_bytes", d.snapshot_max_bytes),
                                       minimum=1024, integer=True),
            reconnect_min_delay=_number(section, "reconnect_min_delay",
                                        data.get("reconnect_min_delay", d.reconnect_min_delay),
                                        minimum=0.001),
            reconnect_max_delay=_number(section, "reconnect_max_delay",
                                        data.get("reconnect_max_delay", d.reconnect_max_delay),
                                        minimum=0.001),
        )
        if config.reconnect_min_delay > config.reconnect_max_delay:
            raise ConfigError(f"{section}: reconnect_min_delay must not exceed reconnect_max_delay")
        return config
