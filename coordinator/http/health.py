"""``/healthz`` (is the process working at all) and ``/readyz`` (should it get traffic and be trusted).

``/healthz`` is 200 while the ingest decoder and the store writer can make
progress: the decoder thread is alive. A process manager restarts the
coordinator when it fails.

``/readyz`` is 200 only when every check passes, else 503 with each check's
verdict, so a load balancer or an operator sees which one failed:

* ``broker``: the coordinator's MQTT session is connected and the broker refuses none of its
  subscriptions;
* ``store``: a small write transaction succeeds (at most one every
  :data:`STORE_CHECK_EVERY_S`; the verdict is cached between);
* ``ingest``: the ingest queue is below :data:`QUEUE_HIGH_WATER` of its
  capacity and the store writer is not holding batches for an unavailable store.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from coordinator.http.context import ApiContext, api_context
from schemas.errors import StoreError

__all__ = ["QUEUE_HIGH_WATER", "STORE_CHECK_EVERY_S", "StoreProbe", "router"]

STORE_CHECK_EVERY_S = 2.0
QUEUE_HIGH_WATER = 0.8

router = APIRouter(tags=["operations"])


class Check(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: str
    checks: dict[str, Check]


class StoreProbe:
    """The cached verdict of the last write check (one per app: ``app.state.store_probe``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = -1e18
        self.verdict = (False, "not checked yet")


def _store_check(ctx: ApiContext, probe: StoreProbe) -> tuple[bool, str]:
    with probe.lock:
        now = time.monotonic()
        if now - probe.at >= STORE_CHECK_EVERY_S:
            try:
                if ctx.processor is not None:
                    with ctx.processor.write_lock:
                        ctx.store.check_writable()
                else:
                    ctx.store.check_writable()
                probe.verdict = (True, "a write transaction succeeded")
            except StoreError as exc:
                probe.verdict = (False, str(exc)[:300])
            probe.at = now
        return probe.verdict


def _checks(ctx: ApiContext, probe: StoreProbe) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    if ctx.session is not None:
        stats = ctx.session.stats()
        refused = stats.refused_subscriptions  # asked for again with back-off; nothing arrives meanwhile
        if not stats.connected:
            checks["broker"] = {"ok": False, "detail": f"not connected: {stats.last_error or 'connecting'}"}
        elif refused:
            checks["broker"] = {"ok": False, "detail": "connected; the broker refused the subscription "
                                f"to {', '.join(refused)} (retrying)"}
        else:
            checks["broker"] = {"ok": True, "detail": "connected"}
    ok, detail = _store_check(ctx, probe)
    checks["store"] = {"ok": ok, "detail": detail}
    if ctx.ingest is not None:
        depth, capacity = ctx.ingest.stats().queue_depth, ctx.ingest.queue_capacity
        held = ctx.processor.held_since if ctx.processor is not None else None
        if not ctx.ingest.is_running():
            checks["ingest"] = {"ok": False, "detail": "the decoder thread is not running"}
        elif held is not None:
            checks["ingest"] = {"ok": False,
                                "detail": "the store writer is holding batches (store unavailable)"}
        elif depth >= QUEUE_HIGH_WATER * capacity:
            checks["ingest"] = {"ok": False, "detail": f"held back: {depth} of {capacity} messages queued"}
        else:
            checks["ingest"] = {"ok": True, "detail": f"{depth} of {capacity} messages queued"}
    return checks


@router.get("/healthz", response_model=Health, summary="Liveness: the ingest decoder is running",
            responses={503: {"model": Health, "description": "the decoder stopped"}})
def healthz(ctx: Annotated[ApiContext, Depends(api_context)]) -> JSONResponse:
    alive = ctx.ingest is None or ctx.ingest.is_running()
    body = {"status": "ok" if alive else "failing",
            "checks": {"decoder": {"ok": alive, "detail": "running" if alive else "stopped"}}}
    return JSONResponse(body, status_code=200 if alive else 503)


@router.get("/readyz", response_model=Health, summary="Readiness: broker connected, store writable, "
            "ingest not held back", responses={503: {"model": Health, "description": "a check failed"}})
def readyz(request: Request, ctx: Annotated[ApiContext, Depends(api_context)]) -> JSONResponse:
    checks = _checks(ctx, request.app.state.store_probe)
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)
