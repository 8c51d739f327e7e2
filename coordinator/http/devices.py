"""``/api/v1/devices``: every device the coordinator has heard of, and one device in full.

A device's row joins what the store keeps (first and last seen, last status,
the birth: identity, capabilities, versions, capacity) with what the running
coordinator knows live: its sequence accounting (received, missing,
duplicates), samples per second and the newest value of each metric.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from coordinator.http.context import ApiContext, api_context
from coordinator.http.errors import ERROR_RESPONSES, ApiError
from coordinator.http.params import Cursor, Limit, decode_cursor, encode_cursor
from coordinator.store.records import DeviceInfo

__all__ = ["DEVICE_PATTERN", "DeviceId", "require_device", "router"]

DEVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
DeviceId = Annotated[str, Path(pattern=DEVICE_PATTERN, description="the device id")]
#: Unacknowledged anomalies counted per device at most (the overview needs a figure, not all of them).
OPEN_ANOMALY_SCAN = 1000

router = APIRouter(prefix="/api/v1", tags=["devices"], responses=ERROR_RESPONSES)


class SequenceAccounting(BaseModel):
    """Loss and duplication of the device's metric stream, from its per-sample sequence numbers."""

    epoch: int
    received: int
    missing: int
    duplicates: int
    epochs_seen: int


class DeviceSummary(BaseModel):
    id: str
    status: str | None = Field(description="online / offline as the device's retained status says")
    status_ms: int | None
    first_seen_ms: int
    last_seen_ms: int
    agent_version: str | None
    birth_epoch: int | None
    birth_ms: int | None
    sequence: SequenceAccounting | None
    samples_per_s: float | None = Field(description="over the last seconds (None: not seen since start)")
    last_values: dict[str, float | None] = Field(description="the newest value of each metric")
    open_anomalies: int = Field(description="anomalies not acknowledged yet")


class DevicePage(BaseModel):
    items: list[DeviceSummary]
    next_cursor: str | None = None


class DeviceDetail(DeviceSummary):
    birth: dict[str, Any] | None = Field(description="the newest birth record: capabilities, versions, "
                                                      "capacity")
    metrics: list[str]
    cameras: list[str]


def require_device(ctx: ApiContext, device: str) -> DeviceInfo:
    """The stored device, or a 404 naming it."""
    for info in ctx.store.devices():
        if info.id == device:
            return info
    raise ApiError(404, "unknown_device", f"no device {device!r}", "device")


def _open_anomalies(ctx: ApiContext) -> Counter[str]:
    open_ = ctx.store.anomaly_page(acknowledged=False, limit=OPEN_ANOMALY_SCAN)
    return Counter(a.anomaly.device for a in open_)


def _summary(ctx: ApiContext, info: DeviceInfo, open_anomalies: Counter[str],
             sequences: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    seq = sequences.get(info.id)
    row = live.get(info.id)
    return {
        "id": info.id, "status": info.last_status, "status_ms": info.last_status_ms,
        "first_seen_ms": info.first_seen_ms, "last_seen_ms": info.last_seen_ms,
        "agent_version": info.agent_version, "birth_epoch": info.birth_epoch, "birth_ms": info.birth_ms,
        "sequence": None if seq is None else {"epoch": seq.epoch, "received": seq.received,
                                              "missing": seq.missing, "duplicates": seq.duplicates,
                                              "epochs_seen": seq.epochs_seen},
        "samples_per_s": None if row is None else round(row.samples_per_s, 3),
        "last_values": {} if row is None else {k: v if v == v and abs(v) != float("inf") else None
                                               for k, v in row.last_values.items()},
        "open_anomalies": open_anomalies.get(info.id, 0),
    }


def _live(ctx: ApiContext) -> tuple[dict[str, Any], dict[str, Any]]:
    sequences = ctx.ingest.sequence_snapshot() if ctx.ingest is not None else {}
    live = ctx.view.live() if ctx.view is not None else {}
    return sequences, live


@router.get("/devices", response_model=DevicePage, summary="Every device, by id")
def list_devices(ctx: Annotated[ApiContext, Depends(api_context)], limit: Limit = 1000, cursor: Cursor = None,
                 status: Annotated[str | None, Query(max_length=32, description="only devices whose last "
                                                     "status is this (online, offline)")] = None
                 ) -> dict[str, Any]:
    after = decode_cursor(cursor, "text")
    devices = [d for d in ctx.store.devices()
               if (after is None or d.id > after) and (status is None or d.last_status == status)]
    page = devices[:limit]
    anomalies = _open_anomalies(ctx)
    sequences, live = _live(ctx)
    return {"items": [_summary(ctx, d, anomalies, sequences, live) for d in page],
            "next_cursor": encode_cursor(page[-1].id) if len(devices) > limit else None}


@router.get("/devices/{device}", response_model=DeviceDetail, summary="One device in full")
def get_device(device: DeviceId, ctx: Annotated[ApiContext, Depends(api_context)]) -> dict[str, Any]:
    info = require_device(ctx, device)
    births = ctx.store.births(device)
    sequences, live = _live(ctx)
    summary = _summary(ctx, info, _open_anomalies(ctx), sequences, live)
    metrics = set(ctx.store.metric_names(device))
    if ctx.processor is not None:
        metrics |= ctx.processor.metrics_by_device().get(device, set())
    cameras = sorted({e.camera for e in ctx.store.event_page(device=device, limit=200)})
    return {**summary, "birth": births[-1] if births else None, "metrics": sorted(metrics),
            "cameras": cameras}


class MetricNames(BaseModel):
    device: str
    metrics: list[str]


@router.get("/devices/{device}/metrics", response_model=MetricNames, summary="The device's metric names")
def list_metrics(device: DeviceId, ctx: Annotated[ApiContext, Depends(api_context)]) -> dict[str, Any]:
    require_device(ctx, device)
    names = set(ctx.store.metric_names(device))
    if ctx.processor is not None:
        names |= ctx.processor.metrics_by_device().get(device, set())
    return {"device": device, "metrics": sorted(names)}
