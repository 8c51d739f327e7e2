"""``/api/v1/fleet``: the overview in one request (device counts, open anomalies, ingest figures,
the busiest devices), and ``/api/v1/dead-letters``: messages the coordinator could not use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from coordinator.http.context import ApiContext, api_context
from coordinator.http.errors import ERROR_RESPONSES
from coordinator.http.params import Limit

__all__ = ["BOTTLENECK_METRICS", "router"]

#: What makes a device a bottleneck, in the order the overview ranks by (higher is worse).
BOTTLENECK_METRICS = ("cpu_percent", "load1", "temp_c")
TOP = 5

router = APIRouter(prefix="/api/v1", tags=["fleet"], responses=ERROR_RESPONSES)


class Ingest(BaseModel):
    messages: int
    samples: int
    detections: int
    duplicates: int
    dead_letters: int
    queue_depth: int
    stored_samples: int
    samples_per_s: float
    broker_connected: bool


class Bottleneck(BaseModel):
    device: str
    values: dict[str, float | None]


class Fleet(BaseModel):
    devices: int
    online: int
    offline: int
    open_anomalies: int = Field(description="not acknowledged (counted up to 1000)")
    live_clients: int
    started_ms: int
    ingest: Ingest | None
    bottlenecks: list[Bottleneck] = Field(
        description=f"the busiest devices by {', '.join(BOTTLENECK_METRICS)}")


def _finite(value: float | None) -> float | None:
    return value if value is not None and value == value and abs(value) != float("inf") else None


@router.get("/fleet", response_model=Fleet, summary="The fleet at a glance")
def fleet(ctx: Annotated[ApiContext, Depends(api_context)]) -> dict[str, Any]:
    devices = ctx.store.devices()
    online = sum(1 for d in devices if d.last_status == "online")
    open_anomalies = len(ctx.store.anomaly_page(acknowledged=False, limit=1000))
    live = ctx.view.live() if ctx.view is not None else {}
    ranked = sorted(((tuple(-(row.last_values.get(m) or 0.0) for m in BOTTLENECK_METRICS), name)
                     for name, row in live.items() if row.last_values), key=lambda item: item)
    bottlenecks = [{"device": name, "values": {m: _finite(live[name].last_values.get(m))
                                               for m in BOTTLENECK_METRICS}} for _, name in ranked[:TOP]]
    ingest = None
    if ctx.ingest is not None:
        stats = ctx.ingest.stats()
        ingest = {"messages": stats.messages, "samples": stats.samples, "detections": stats.detections,
                  "duplicates": stats.duplicates, "dead_letters": sum(stats.dead_letters.values()),
                  "queue_depth": stats.queue_depth,
                  "stored_samples": ctx.processor.stored_samples if ctx.processor is not None else 0,
                  "samples_per_s": round(sum(row.samples_per_s for row in live.values()), 3),
                  "broker_connected": ctx.session.is_connected if ctx.session is not None else False}
    return {"devices": len(devices), "online": online, "offline": len(devices) - online,
            "open_anomalies": open_anomalies, "live_clients": ctx.feed.client_count,
            "started_ms": ctx.started_ms, "ingest": ingest, "bottlenecks": bottlenecks}


class DeadLetter(BaseModel):
    received_ms: int
    topic: str
    reason: str
    error: str
    payload_bytes: int
    payload_preview: str = Field(description="the first bytes, as text where they are text")


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]


@router.get("/dead-letters", response_model=DeadLetterPage,
            summary="Messages that could not be used, newest first")
def dead_letters(ctx: Annotated[ApiContext, Depends(api_context)], limit: Limit = 100) -> dict[str, Any]:
    return {"items": [{"received_ms": d.received_ms, "topic": d.topic, "reason": d.reason, "error": d.error,
                       "payload_bytes": len(d.payload),
                       "payload_preview": d.payload[:200].decode("utf-8", "replace")}
                      for d in ctx.store.dead_letters(limit)]}
