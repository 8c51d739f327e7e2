"""What the HTTP routes read: the store and the live parts of a running coordinator.

``edge-coordinator start`` fills every field; a test or a tool may leave the
live parts out (``None``) and the routes answer from the store alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from broker.session import BusSession
from coordinator.cluster import DeviceShards
from coordinator.coordination_view import CoordinationView
from coordinator.fleet_view import FleetView
from coordinator.http.config import HttpConfig
from coordinator.http.live_feed import LiveFeed
from coordinator.ingest import Ingest
from coordinator.processor import FleetProcessor
from coordinator.store.base import Store

__all__ = ["ApiContext", "api_context"]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ApiContext:
    store: Store
    config: HttpConfig = field(default_factory=HttpConfig)
    feed: LiveFeed = field(default_factory=LiveFeed)
    session: BusSession | None = None
    ingest: Ingest | None = None
    processor: FleetProcessor | None = None
    view: FleetView | None = None
    coordination: CoordinationView | None = None
    cluster: DeviceShards | None = None
    wall_clock_ms: Callable[[], int] = _wall_ms
    started_ms: int = field(default_factory=_wall_ms)


def api_context(request: Request) -> ApiContext:
    """The routes' dependency: the context the app was built with."""
    ctx: ApiContext = request.app.state.context
    return ctx
