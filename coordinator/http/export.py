"""``GET /api/v1/export.csv``: a device's raw samples over a time range, streamed as CSV
(:mod:`coordinator.sample_export`; the same as ``edge-coordinator export``)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from coordinator.http.context import ApiContext, api_context
from coordinator.http.devices import DEVICE_PATTERN, require_device
from coordinator.http.errors import ERROR_RESPONSES
from coordinator.http.params import TimeParam, time_range
from coordinator.sample_export import csv_chunks

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["export"], responses=ERROR_RESPONSES)


@router.get("/export.csv", response_class=StreamingResponse,
            summary="Raw samples of one device as CSV (time_ms,time,device,metric,value,epoch,seq)",
            responses={200: {"content": {"text/csv": {}}, "description": "the samples"}})
def export_csv(ctx: Annotated[ApiContext, Depends(api_context)],
               device: Annotated[str, Query(pattern=DEVICE_PATTERN, description="the device")],
               metric: Annotated[str | None, Query(max_length=128, description="only this metric")] = None,
               since: TimeParam = None, until: TimeParam = None) -> StreamingResponse:
    low, high = time_range(since, until)
    require_device(ctx, device)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{device}{'-' + metric if metric else ''}") + ".csv"
    return StreamingResponse(csv_chunks(ctx.store, device, low, high, metric), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
