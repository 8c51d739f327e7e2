"""The ASGI application: every router, the error handlers and the dashboard, around one context.

FastAPI (on Starlette) because the OpenAPI document comes from the same
typed signatures that check the requests, which is what property-based API
testing (schemathesis) and client generators read; because Starlette's
WebSocket support serves the live feed from the same process and port; and
because it is among the most used and maintained Python web stacks, served by
uvicorn. The interactive docs pages are off: they load scripts from a CDN,
and a coordinator on a site network may have no Internet; the OpenAPI
document is at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from fastapi import FastAPI

from coordinator.http import (
    anomalies,
    camera_events,
    cluster,
    coordination,
    devices,
    export,
    fleet,
    health,
    history,
    prometheus,
    websocket,
)
from coordinator.http.context import ApiContext
from coordinator.http.dashboard import mount_dashboard
from coordinator.http.errors import install_error_handlers

__all__ = ["API_VERSION", "build_app"]

API_VERSION = "1.0.0"


def build_app(context: ApiContext) -> FastAPI:
    """The app serving ``context``'s coordinator."""
    app = FastAPI(title="edgebus coordinator", version=API_VERSION,
                  description="The fleet as the coordinator sees it: devices, metric history, camera events, "
                              "anomalies, coordination, exports. Reading needs no token; changes need "
                              "`Authorization: Bearer <[http] token>`.",
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
    app.state.context = context
    app.state.store_probe = health.StoreProbe()
    install_error_handlers(app)
    for module in (fleet, devices, history, camera_events, anomalies, coordination, cluster, export,
                   health, prometheus, websocket):
        app.include_router(module.router)
    mount_dashboard(app)
    return app
