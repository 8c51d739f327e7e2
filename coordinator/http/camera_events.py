"""Camera tracks and detections: ``/api/v1/events``, ``/api/v1/devices/{device}/detections`` and the
JPEG snapshot of a track's best sighting.

Agents attach a small JPEG (base64) to a track's end event; the store keeps
the event as published. Lists leave the image out and give ``snapshot_url``
instead; the snapshot route decodes it and serves ``image/jpeg``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from coordinator.http.context import ApiContext, api_context
from coordinator.http.devices import DEVICE_PATTERN, DeviceId, require_device
from coordinator.http.errors import ERROR_RESPONSES, ApiError
from coordinator.http.live_feed import event_view
from coordinator.http.params import Cursor, Limit, TimeParam, decode_cursor, encode_cursor, time_range
from coordinator.store.records import StoredEvent

__all__ = ["router"]

CameraName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^/\s]+$")]
CameraFilter = Annotated[str | None, Query(max_length=128, description="only this camera")]

router = APIRouter(prefix="/api/v1", tags=["cameras"], responses=ERROR_RESPONSES)


class TrackEvent(BaseModel):
    id: int
    device: str
    camera: str
    type: str = Field(description="start or end")
    track_id: int | None
    label: str | None
    time_ms: int
    received_ms: int
    event: dict[str, Any] = Field(description="the event as the agent published it, without the JPEG")
    snapshot_url: str | None


class EventPage(BaseModel):
    items: list[TrackEvent]
    next_cursor: str | None = None


def _event(e: StoredEvent) -> dict[str, Any]:
    view, url = event_view(e.device, e.camera, e.event)
    return {"id": e.id, "device": e.device, "camera": e.camera, "type": e.type, "track_id": e.track_id,
            "label": e.label, "time_ms": e.time_ms, "received_ms": e.received_ms, "event": view,
            "snapshot_url": url}


@router.get("/events", response_model=EventPage, summary="Camera track events, newest first")
def list_events(ctx: Annotated[ApiContext, Depends(api_context)],
                device: Annotated[str | None, Query(pattern=DEVICE_PATTERN, description="only this device")]
                = None, camera: CameraFilter = None, since: TimeParam = None, until: TimeParam = None,
                limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    low, high = time_range(since, until)
    before = decode_cursor(cursor, "int")
    rows = ctx.store.event_page(device=device, camera=camera, since_ms=low, until_ms=high,
                                before_id=before, limit=limit + 1)
    page = rows[:limit]
    return {"items": [_event(e) for e in page],
            "next_cursor": encode_cursor(page[-1].id) if len(rows) > limit else None}


class Detection(BaseModel):
    camera: str
    epoch: int
    seq: int
    time_ms: int
    label: str
    confidence: float
    box: list[float] = Field(description="[x1, y1, x2, y2] normalised to [0, 1]")
    track_id: int | None


class DetectionPage(BaseModel):
    device: str
    items: list[Detection]
    next_cursor: str | None = None


@router.get("/devices/{device}/detections", response_model=DetectionPage,
            summary="Objects the device's cameras detected, newest first")
def list_detections(device: DeviceId, ctx: Annotated[ApiContext, Depends(api_context)],
                    camera: CameraFilter = None, since: TimeParam = None, until: TimeParam = None,
                    limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    low, high = time_range(since, until)
    before = decode_cursor(cursor, "detection")
    require_device(ctx, device)
    rows = ctx.store.detection_page(device, camera, low, high, before, limit + 1)
    page = rows[:limit]
    return {"device": device,
            "items": [{"camera": d.camera, "epoch": d.epoch, "seq": d.seq, "time_ms": d.time_ms,
                       "label": d.label, "confidence": d.confidence, "box": list(d.box),
                       "track_id": d.track_id}
                      for _, d in page],
            "next_cursor": encode_cursor(list(page[-1][0])) if len(rows) > limit else None}


@router.get("/devices/{device}/cameras/{camera}/tracks/{track_id}/snapshot.jpg",
            response_class=Response, summary="The JPEG of a track's best sighting",
            responses={200: {"content": {"image/jpeg": {}}, "description": "the snapshot"}})
def snapshot(device: DeviceId, camera: CameraName, track_id: Annotated[int, Path(ge=0, lt=2**63)],
             ctx: Annotated[ApiContext, Depends(api_context)],
             time_ms: Annotated[int | None, Query(ge=0, lt=2**63, description="the end event's time_ms "
                                                  "(default: the newest end of this track)")] = None
             ) -> Response:
    require_device(ctx, device)
    event = ctx.store.track_end_event(device, camera, track_id, time_ms)
    encoded = event.event.get("snapshot_jpeg_b64") if event is not None else None
    if not isinstance(encoded, str) or not encoded:
        raise ApiError(404, "no_snapshot", f"no snapshot of track {track_id} of {device}/{camera}")
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(404, "no_snapshot", "the stored snapshot is not valid base64") from None
    return Response(image, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})
