"""A camera's health: is its picture coming in? Retained JSON on ``{root}/{device}/state/{camera}_health``.

One compact JSON object, published (retained, QoS 1) whenever the state or
the error changes, so any MQTT client, Home Assistant included, can show a
camera that lost its stream::

    {"camera": "front", "state": "reconnecting", "since_ms": 1763900000123,
     "error": "stream dropped", "source": "rtsp://***@10.0.0.7/stream"}

``state`` is one of :class:`SourceState`:

``connecting``    the source is being opened for the first time (no frame yet);
``streaming``     frames are coming in;
``reconnecting``  a live source (stream, device) dropped or cannot be opened; the
                  agent retries with a back-off and its tracks were ended
                  (reason ``source_lost``);
``failed``        the source could not be opened and will not be retried (a file
                  or folder), or capturing stopped on an unexpected error;
``ended``         a file or folder played to its end;
``stopped``       the camera was stopped (unassigned, moved, or the agent stopped).

Only ``streaming`` means the camera sees anything: its object counts are
meaningful then and only then. ``since_ms`` is the wall-clock time the state
began; ``error`` the last problem ("" when there is none); ``source`` what the
camera reads, with any credentials in a URL masked.

>>> health = CameraHealth("front", SourceState.STREAMING, 1_000)
>>> CameraHealth.decode(health.encode()) == health
True
>>> health.encode()
b'{"camera":"front","state":"streaming","since_ms":1000,"error":"","source":""}'
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from schemas.errors import CodecError, TopicError
from schemas.json_object import json_object
from schemas.topics import validate_name

__all__ = ["HEALTH_SUFFIX", "CameraHealth", "SourceState", "camera_health_name"]

#: The retained health of camera ``front`` is ``state/front_health``.
HEALTH_SUFFIX = "_health"


class SourceState(enum.StrEnum):
    """Where a camera's source is (see the module docstring)."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    ENDED = "ended"
    STOPPED = "stopped"


def camera_health_name(camera: str) -> str:
    """The state name whose topic holds a camera's health: ``{camera}_health``."""
    return f"{camera}{HEALTH_SUFFIX}"


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """One published health state of one camera."""

    camera: str
    state: SourceState
    since_ms: int
    error: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        try:
            validate_name(self.camera, "camera")
        except TopicError as exc:
            raise CodecError(str(exc)) from None
        try:
            object.__setattr__(self, "state", SourceState(self.state))
        except ValueError:
            raise CodecError(f"camera health state must be one of "
                             f"{', '.join(s.value for s in SourceState)}, not {self.state!r}") from None
        if isinstance(self.since_ms, bool) or not isinstance(self.since_ms, int) or self.since_ms < 0:
            raise CodecError(f"camera health since_ms must be a non-negative integer, not "
                             f"{self.since_ms!r}")
        if not isinstance(self.error, str) or not isinstance(self.source, str):
            raise CodecError("camera health error and source must be strings")

    @property
    def streaming(self) -> bool:
        """Whether the camera sees anything (its counts mean something)."""
        return self.state is SourceState.STREAMING

    def to_json(self) -> dict[str, Any]:
        return {"camera": self.camera, "state": self.state.value, "since_ms": self.since_ms,
                "error": self.error, "source": self.source}

    def encode(self) -> bytes:
        """Compact UTF-8 JSON."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, payload: bytes | str) -> CameraHealth:
        """Parse a published health state; unknown fields are ignored, bad ones are CodecError."""
        data = json_object(payload, "camera health")
        try:
            return cls(camera=data["camera"], state=data["state"], since_ms=data["since_ms"],
                       error=data.get("error", ""), source=data.get("source", ""))
        except KeyError as exc:
            raise CodecError(f"camera health lacks field {exc.args[0]!r}") from exc
