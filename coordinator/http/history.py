"""``/api/v1/devices/{device}/metrics/{metric}/history``: one metric over a time range, downsampled.

Reads the raw samples (compressed blocks) and the rollups of the range and
returns at most ``points`` buckets (see :mod:`coordinator.http.downsample`),
with the anomalies of that metric in the range, so a chart can mark them.
The default range is the last hour; ranges up to :data:`MAX_RANGE_DAYS` days.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from coordinator.http.context import ApiContext, api_context
from coordinator.http.devices import DeviceId, require_device
from coordinator.http.downsample import downsample
from coordinator.http.errors import ERROR_RESPONSES, ApiError
from coordinator.http.params import TimeParam, time_range

__all__ = ["DEFAULT_RANGE_MS", "MAX_POINTS", "MAX_RANGE_DAYS", "router"]

DEFAULT_RANGE_MS = 3_600_000
MAX_POINTS = 5000
MAX_RANGE_DAYS = 400
#: Anomalies returned with a history at most.
MAX_MARKS = 500

MetricName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^/\s]+$",
                                 description="the metric name")]

router = APIRouter(prefix="/api/v1", tags=["metrics"], responses=ERROR_RESPONSES)


class AnomalyMark(BaseModel):
    id: int
    time_ms: int
    value: float | None
    severity: str
    kind: str
    explanation: str
    acknowledged: bool


class History(BaseModel):
    """Columns: ``t[i]`` is the start of bucket ``i`` (ms); ``avg``/``min``/``max`` summarise its
    ``count[i]`` samples. Buckets without samples are left out, so gaps stay gaps."""

    device: str
    metric: str
    since_ms: int
    until_ms: int
    bucket_ms: int = Field(description="the width of every bucket")
    raw_samples: int = Field(description="raw samples in the range")
    rollup_samples: int = Field(description="samples summarised by rollups where raw ones are gone")
    t: list[int]
    avg: list[float | None]
    min: list[float | None]
    max: list[float | None]
    count: list[int]
    anomalies: list[AnomalyMark]


@router.get("/devices/{device}/metrics/{metric}/history", response_model=History,
            summary="One metric over a time range, downsampled to at most `points` buckets")
def history(device: DeviceId, metric: MetricName, ctx: Annotated[ApiContext, Depends(api_context)],
            since: TimeParam = None, until: TimeParam = None,
            points: Annotated[int, Query(ge=1, le=MAX_POINTS, description="buckets at most")] = 500
            ) -> dict[str, Any]:
    low, high = time_range(since, until)
    require_device(ctx, device)
    if high is None:
        high = max(ctx.wall_clock_ms() + 1, (low or 0) + 1)
    if low is None:
        low = max(high - DEFAULT_RANGE_MS, 0)
    if high - low > MAX_RANGE_DAYS * 86_400_000:
        raise ApiError(400, "range_too_long", f"at most {MAX_RANGE_DAYS} days per query", "since")
    times, values = ctx.store.series(device, metric, low, high)
    rollups = ctx.store.rollups(device, metric, low, high)
    if not len(times) and not rollups and metric not in ctx.store.metric_names(device):
        known = ctx.processor.metrics_by_device().get(device, set()) if ctx.processor else set()
        if metric not in known:
            raise ApiError(404, "unknown_metric", f"device {device!r} has no metric {metric!r}", "metric")
    out = downsample(times, values, since_ms=low, until_ms=high, points=points, rollups=rollups)
    marks = ctx.store.anomaly_page(device=device, metric=metric, since_ms=low, until_ms=high, limit=MAX_MARKS)
    return {"device": device, "metric": metric, "since_ms": low, "until_ms": high, "bucket_ms": out.bucket_ms,
            "raw_samples": out.raw_samples, "rollup_samples": out.rollup_samples, "t": out.t, "avg": out.avg,
            "min": out.min, "max": out.max, "count": out.count,
            "anomalies": [{"id": a.id, "time_ms": a.anomaly.time_ms, "value": _finite(a.anomaly.value),
                           "severity": a.anomaly.severity, "kind": a.anomaly.kind,
                           "explanation": a.anomaly.explanation,
                           "acknowledged": a.acknowledged_ms is not None}
                          for a in reversed(marks)]}


def _finite(value: float | None) -> float | None:
    return value if value is not None and value == value and abs(value) != float("inf") else None
