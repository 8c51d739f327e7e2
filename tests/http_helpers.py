"""A coordinator with its HTTP API, wired as `edge-coordinator start` wires it, on a real broker.

:func:`api_coordinator` starts the store, ingest, processor, live view, live
feed, coordination view and the uvicorn server (a free port, a bearer token)
in-process and yields an :class:`ApiCoordinator`; tests talk to it over real
HTTP and WebSockets and feed it through the broker like any agent would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from broker.session import BusSession
from coordinator.coordination_view import CoordinationView
from coordinator.fleet_view import FleetView
from coordinator.http.app import build_app
from coordinator.http.config import HttpConfig
from coordinator.http.context import ApiContext
from coordinator.http.live_feed import LiveFeed
from coordinator.http.server import HttpServer
from coordinator.ingest import Ingest
from coordinator.processor import FleetProcessor
from coordinator.store.base import Store
from schemas.messages import MetricSample, MetricsBatch, encode_record
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, config_for
from tests.coordinator_helpers import start_coordinator, stop_coordinator

__all__ = ["TOKEN", "ApiCoordinator", "Sender", "api_coordinator", "metrics_batch", "normal"]

TOKEN = "test-token-0123456789abcdef"


@dataclass
class ApiCoordinator:
    bus: BusSession
    ingest: Ingest
    processor: FleetProcessor
    store: Store
    view: FleetView
    feed: LiveFeed
    server: HttpServer
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=WAIT)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "api/v1/ws"


@contextlib.contextmanager
def api_coordinator(broker: RunningBroker, data_dir: Path, *, token: str | None = TOKEN,
                    live_queue: int = 1000, send_buffer: int | None = None) -> Iterator[ApiCoordinator]:
    """The coordinator and its API, stopped (server first) whatever happens."""
    bus, ingest, processor, store = parts = start_coordinator(broker, data_dir)
    view = FleetView(ingest.sequence_snapshot, forecast=processor.forecast)
    feed = LiveFeed(live_queue)
    processor.alert_listeners += [lambda a: view.on_anomaly(a.device, a.explanation), feed.on_alert]
    coordination = CoordinationView(bus.topics.root).attach(bus)
    ingest.sinks.insert(0, feed)  # as the CLI: live points before scoring and storing
    ingest.sinks.append(view)
    config = HttpConfig(port=0, token=token, live_queue=live_queue)
    context = ApiContext(store=store, config=config, feed=feed, session=bus, ingest=ingest,
                         processor=processor, view=view, coordination=coordination)
    server = HttpServer(build_app(context), config, send_buffer=send_buffer).start()
    running = ApiCoordinator(bus, ingest, processor, store, view, feed, server)
    try:
        yield running
    finally:
        running.http.close()
        server.stop()
        stop_coordinator(parts)


def normal(n: int, start: int) -> list[float]:
    """Readings around 20 with a little repeating wobble (the detector learns them as normal)."""
    return [20.0 + ((start + i) * 7 % 11 - 5) * 0.6 for i in range(n)]


def metrics_batch(device: str, first_seq: int, values: list[float], *, metric: str = "cpu_percent",
                  t0_ms: int = 1_763_900_000_000, epoch: int = 7, step_ms: int = 1000) -> bytes:
    """An encoded metrics batch: sample ``i`` is number ``first_seq + i`` at ``t0 + (first_seq + i) step``."""
    return encode_record(MetricsBatch(device=device, epoch=epoch, first_seq=first_seq, samples=tuple(
        MetricSample(t0_ms + (first_seq + i) * step_ms, metric, v) for i, v in enumerate(values))))


class Sender:
    """A plain session that publishes as devices would (tests choose the payloads)."""

    def __init__(self, broker: RunningBroker, name: str = "sender") -> None:
        self.bus = BusSession(config_for(broker, client_id=name))
        self.bus.start()
        assert self.bus.wait_connected(WAIT)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        self.bus.publish(topic, payload, qos=1, retain=retain)

    def flush(self) -> None:
        assert self.bus.flush(WAIT)

    def stop(self) -> None:
        self.bus.stop()
