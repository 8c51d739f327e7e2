"""The work an agent participant prepares in a camera move: release a camera, or take one.

A move of camera ``door`` from agent A to agent B is one transaction with two
parts: A's payload releases ``door``, B's takes it with its camera table (the
``[[cameras]]`` keys). The payload is JSON, so an operator can write one by
hand for ``edge-bus tx run``::

    {"v": 1, "release": "door"}
    {"v": 1, "take": {"name": "door", "source": "rtsp://...", "fps": 8}}

The camera table itself is checked by the agent when it prepares (it knows
its detectors and sources); here only the shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import TxError
from schemas.record_base import empty_map
from schemas.topics import validate_name

__all__ = ["CAMERA_WORK_VERSION", "ReleaseCamera", "TakeCamera", "decode_camera_work", "encode_camera_work"]

CAMERA_WORK_VERSION = 1


@dataclass(frozen=True, slots=True)
class ReleaseCamera:
    """Stop running ``camera`` here once the transaction commits."""

    camera: str

    def __post_init__(self) -> None:
        _camera_name(self.camera)


@dataclass(frozen=True, slots=True)
class TakeCamera:
    """Start running ``camera`` here with ``table`` (its ``[[cameras]]`` keys) once it commits."""

    camera: str
    table: Mapping[str, Any] = field(default_factory=empty_map)

    def __post_init__(self) -> None:
        _camera_name(self.camera)
        if self.table.get("name", self.camera) != self.camera:
            raise TxError(f"the camera table names {self.table.get('name')!r}, not {self.camera!r}")


CameraWork = ReleaseCamera | TakeCamera


def _camera_name(name: object) -> str:
    if not isinstance(name, str):
        raise TxError(f"a camera name must be text, not {type(name).__name__}")
    try:
        return validate_name(name, "camera name")
    except ValueError as exc:
        raise TxError(str(exc)) from None


def encode_camera_work(work: CameraWork) -> bytes:
    if isinstance(work, ReleaseCamera):
        body: dict[str, Any] = {"v": CAMERA_WORK_VERSION, "release": work.camera}
    else:
        body = {"v": CAMERA_WORK_VERSION, "take": {**work.table, "name": work.camera}}
    return json.dumps(body, sort_keys=True).encode()


def decode_camera_work(payload: bytes) -> CameraWork:
    """The work in ``payload``; :class:`TxError` names what is wrong (it becomes the no vote's reason)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TxError(f"camera work is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise TxError("camera work must be a JSON object")
    version = body.get("v", CAMERA_WORK_VERSION)
    if version != CAMERA_WORK_VERSION:
        raise TxError(f"camera work version {version!r:.20} is not supported (this agent knows "
                      f"{CAMERA_WORK_VERSION})")
    if ("release" in body) == ("take" in body):
        raise TxError('camera work needs exactly one of "release" or "take"')
    if "release" in body:
        return ReleaseCamera(_camera_name(body["release"]))
    table = body["take"]
    if not isinstance(table, dict):
        raise TxError('"take" must be the camera table (a JSON object with its "name")')
    return TakeCamera(_camera_name(table.get("name")), table)
