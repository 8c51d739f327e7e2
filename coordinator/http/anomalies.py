"""``/api/v1/anomalies``: the anomalies the coordinator found, open and past, and acknowledging one.

An anomaly is *open* until an operator acknowledges it (``POST
/api/v1/anomalies/{id}/acknowledge`` with the bearer token); ``active`` says
whether the detector's episode is still going on (None when this process has
no detector for the stream, e.g. after a restart or for a batch alert).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, Field

from coordinator.http.auth import require_token
from coordinator.http.context import ApiContext, api_context
from coordinator.http.devices import DEVICE_PATTERN
from coordinator.http.errors import ERROR_RESPONSES, ApiError, ErrorBody
from coordinator.http.params import Cursor, Limit, TimeParam, decode_cursor, encode_cursor, time_range
from coordinator.store.records import StoredAnomaly

__all__ = ["router"]

AnomalyId = Annotated[int, Path(ge=1, lt=2**63, description="the anomaly's id")]

router = APIRouter(prefix="/api/v1", tags=["anomalies"], responses=ERROR_RESPONSES)


class AnomalyState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ALL = "all"


class Expected(BaseModel):
    low: float | None
    high: float | None


class Anomaly(BaseModel):
    id: int
    device: str
    metric: str
    time_ms: int
    value: float | None
    score: float | None
    threshold: float | None
    expected: Expected
    explanation: str
    severity: str
    kind: str
    acknowledged_ms: int | None
    acknowledged_by: str | None
    active: bool | None = Field(description="the detector's episode is still open")


class AnomalyPage(BaseModel):
    items: list[Anomaly]
    next_cursor: str | None = None


class Acknowledgement(BaseModel):
    by: str | None = Field(default=None, max_length=128, description="who acknowledges (shown to others)")


def _finite(value: float | None) -> float | None:
    return value if value is not None and value == value and abs(value) != float("inf") else None


def _anomaly(ctx: ApiContext, s: StoredAnomaly) -> dict[str, Any]:
    a = s.anomaly
    active = ctx.processor.episode_open(a.device, a.metric) if ctx.processor is not None else None
    return {"id": s.id, "device": a.device, "metric": a.metric, "time_ms": a.time_ms,
            "value": _finite(a.value),
            "score": _finite(a.score), "threshold": _finite(a.threshold),
            "expected": {"low": _finite(a.expected_low), "high": _finite(a.expected_high)},
            "explanation": a.explanation, "severity": a.severity, "kind": a.kind,
            "acknowledged_ms": s.acknowledged_ms, "acknowledged_by": s.acknowledged_by, "active": active}


@router.get("/anomalies", response_model=AnomalyPage, summary="Anomalies, newest first")
def list_anomalies(ctx: Annotated[ApiContext, Depends(api_context)],
                   state: Annotated[AnomalyState, Query(description="open: not acknowledged yet")]
                   = AnomalyState.ALL,
                   device: Annotated[str | None, Query(pattern=DEVICE_PATTERN)] = None,
                   metric: Annotated[str | None, Query(max_length=128)] = None,
                   since: TimeParam = None, until: TimeParam = None, limit: Limit = 100,
                   cursor: Cursor = None) -> dict[str, Any]:
    low, high = time_range(since, until)
    before = decode_cursor(cursor, "int")
    acknowledged = {AnomalyState.OPEN: False, AnomalyState.ACKNOWLEDGED: True}.get(state)
    rows = ctx.store.anomaly_page(device=device, metric=metric, since_ms=low, until_ms=high,
                                  acknowledged=acknowledged, before_id=before, limit=limit + 1)
    page = rows[:limit]
    return {"items": [_anomaly(ctx, s) for s in page],
            "next_cursor": encode_cursor(page[-1].id) if len(rows) > limit else None}


@router.get("/anomalies/{anomaly_id}", response_model=Anomaly, summary="One anomaly")
def get_anomaly(anomaly_id: AnomalyId, ctx: Annotated[ApiContext, Depends(api_context)]) -> dict[str, Any]:
    found = ctx.store.anomaly(anomaly_id)
    if found is None:
        raise ApiError(404, "unknown_anomaly", f"no anomaly {anomaly_id}", "anomaly_id")
    return _anomaly(ctx, found)


@router.post("/anomalies/{anomaly_id}/acknowledge", response_model=Anomaly,
             summary="Acknowledge an anomaly (needs the bearer token); acknowledging twice keeps the first",
             responses={401: {"model": ErrorBody, "description": "no or wrong bearer token"},
                        403: {"model": ErrorBody, "description": "no token is configured: changes are off"}})
def acknowledge(anomaly_id: AnomalyId, ctx: Annotated[ApiContext, Depends(api_context)],
                actor: Annotated[str, Depends(require_token)],
                body: Annotated[Acknowledgement | None, Body()] = None) -> dict[str, Any]:
    by = (body.by if body is not None and body.by else None) or actor
    if ctx.processor is not None:  # store writes from other threads go through the processor's lock
        with ctx.processor.write_lock:
            found = ctx.store.acknowledge_anomaly(anomaly_id, by, ctx.wall_clock_ms())
    else:
        found = ctx.store.acknowledge_anomaly(anomaly_id, by, ctx.wall_clock_ms())
    if found is None:
        raise ApiError(404, "unknown_anomaly", f"no anomaly {anomaly_id}", "anomaly_id")
    return _anomaly(ctx, found)
