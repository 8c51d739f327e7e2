"""The live feed: what ingest and the anomaly engine see, fanned out to WebSocket clients.

:class:`LiveFeed` is an ingest sink and an alert listener. Each batch becomes a
few JSON messages, encoded once, whatever the number of clients:

* ``{"type": "status", "device", "status", "time_ms"}``: a device went online or offline;
* ``{"type": "birth", "device", "agent_version", "epoch", "time_ms"}``: a device (re)started;
* ``{"type": "event", "device", "camera", "event", "snapshot_url"}``: a camera track
  started or ended (the JPEG is left out; ``snapshot_url`` fetches it);
* ``{"type": "anomaly", ...}``: an alert, as published on ``{root}/_anomaly/...``;
* ``{"type": "points", "device", "metric", "t": [...], "v": [...]}``: new samples of
  a series a client subscribed to (``device/metric``). When one batch holds more than
  :data:`LIVE_POINTS` samples of a series (a fast sensor, a backlog after a restart) they
  come as that many runs of consecutive samples instead, with ``"min"``, ``"max"`` and
  ``"count"`` beside ``"v"`` (the mean) and ``"t"`` (each run's first time): a chart cannot
  show more, and the feed's cost stays bounded whatever the ingest rate;
* ``{"type": "latest", "metric", "values": {device: [t, v]}}``: the newest value of
  ``metric`` per device, for clients subscribed to ``*/metric``.

Back-pressure: each client has a queue of at most ``max_queue`` messages. The
producer (the ingest thread) only appends to it under a short lock and wakes the
client's event loop once per batch; it never waits for a client. A client whose
queue would overflow is marked and closed by its own connection handler with
:data:`CLOSE_TOO_SLOW`, so one slow reader costs ingest nothing and other
clients nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from coordinator.anomaly.alert import Alert
from coordinator.ingest import IngestBatch
from schemas.metrics import cycle

__all__ = ["CLOSE_TOO_SLOW", "LiveClient", "LiveFeed", "snapshot_path"]

logger = logging.getLogger(__name__)

#: WebSocket close code for a client that did not read fast enough (RFC 6455 1008, policy violation).
CLOSE_TOO_SLOW = 1008
#: Series one client may subscribe to at most.
MAX_SERIES = 200
#: Points of one series sent per ingest batch at most (more are summarised, see above).
LIVE_POINTS = 64

Series = tuple[str, str]


def snapshot_path(device: str, camera: str, track_id: object, time_ms: object) -> str:
    """The API path of an end event's JPEG snapshot."""
    return (f"/api/v1/devices/{quote(device, safe='')}/cameras/{quote(camera, safe='')}/tracks/"
            f"{track_id}/snapshot.jpg?time_ms={time_ms}")


def event_view(device: str, camera: str, event: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The event without its base64 JPEG, and the snapshot's path when it has one."""
    view = {k: v for k, v in event.items() if k != "snapshot_jpeg_b64"}
    url = None
    if event.get("snapshot_jpeg_b64") and event.get("type") == "end" and type(event.get("track_id")) is int:
        url = snapshot_path(device, camera, event["track_id"], event.get("time_ms"))
    return view, url


def _dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False, default=str)


class LiveClient:
    """One connected client's queue and subscriptions (the connection handler drains it)."""

    __slots__ = ("closed", "dropped", "loop", "max_queue", "overflowed", "queue", "series", "wake",
                 "wildcard")

    def __init__(self, loop: asyncio.AbstractEventLoop, max_queue: int) -> None:
        self.loop = loop
        self.max_queue = max_queue
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        #: Set (on the client's loop) once it overflowed: its handler stops sending and closes it.
        self.dropped = asyncio.Event()
        #: ``(device, metric)`` pairs for points; metrics subscribed for every device (``*/metric``).
        self.series: set[Series] = set()
        self.wildcard: set[str] = set()
        self.overflowed = False
        self.closed = False

    def take(self) -> list[str]:
        """Everything queued so far (on the client's loop; the producer appends under the feed lock)."""
        items = []
        while self.queue:
            items.append(self.queue.popleft())
        return items


class LiveFeed:
    """Thread-safe fan-out from ingest to WebSocket clients (see the module docstring)."""

    def __init__(self, max_queue: int = 1000) -> None:
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._clients: list[LiveClient] = []
        self._series: set[Series] = set()
        self._wildcard: set[str] = set()
        #: Clients closed for falling behind, messages queued, batches seen (for /metrics).
        self.dropped_clients = 0
        self.messages = 0
        self.connections = 0

    # -- clients (called on the server's event loop) --------------------------------------------

    def connect(self, loop: asyncio.AbstractEventLoop) -> LiveClient:
        client = LiveClient(loop, self.max_queue)
        with self._lock:
            self._clients.append(client)
            self.connections += 1
        return client

    def disconnect(self, client: LiveClient) -> None:
        with self._lock:
            client.closed = True
            if client in self._clients:
                self._clients.remove(client)
            self._recount()

    def subscribe(self, client: LiveClient, series: Iterable[str], *, replace: bool = False) -> list[str]:
        """Add ``device/metric`` (or ``*/metric``) series; returns what the client now follows."""
        wanted: set[Series] = set()
        wild: set[str] = set()
        for item in series:
            device, _, metric = item.partition("/")
            if not device or not metric or "/" in metric:
                raise ValueError(f"a series is 'device/metric' or '*/metric', not {item!r}")
            if device == "*":
                wild.add(metric)
            else:
                wanted.add((device, metric))
        with self._lock:
            if replace:
                client.series, client.wildcard = set(), set()
            client.series |= wanted
            client.wildcard |= wild
            if len(client.series) + len(client.wildcard) > MAX_SERIES:
                client.series -= wanted
                client.wildcard -= wild
                raise ValueError(f"at most {MAX_SERIES} series per client")
            self._recount()
            return sorted([f"{d}/{m}" for d, m in client.series] + [f"*/{m}" for m in client.wildcard])

    def unsubscribe(self, client: LiveClient, series: Iterable[str]) -> None:
        with self._lock:
            for item in series:
                device, _, metric = item.partition("/")
                if device == "*":
                    client.wildcard.discard(metric)
                else:
                    client.series.discard((device, metric))
            self._recount()

    def _recount(self) -> None:
        self._series = set().union(*(c.series for c in self._clients))
        self._wildcard = set().union(*(c.wildcard for c in self._clients))

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # -- producers (any thread) ------------------------------------------------------------------

    def __call__(self, batch: IngestBatch) -> None:
        """The ingest sink: statuses, births, events and subscribed points of one batch."""
        if not self._clients:
            return
        messages: list[tuple[object, str]] = []
        for device, status, ms in batch.statuses:
            messages.append((None, _dumps({"type": "status", "device": device, "status": status,
                                           "time_ms": ms})))
        for birth in batch.births:
            messages.append((None, _dumps({"type": "birth", "device": birth.device, "epoch": birth.epoch,
                                           "agent_version": birth.agent_version, "time_ms": birth.time_ms})))
        for record in batch.events:
            view, url = event_view(record.device, record.camera, record.event)
            messages.append((None, _dumps({"type": "event", "device": record.device, "camera": record.camera,
                                           "received_ms": record.received_ms, "event": view,
                                           "snapshot_url": url})))
        series, wildcard = self._series, self._wildcard
        if (series or wildcard) and batch.metric_runs:
            messages += self._points(batch, series, wildcard)
        if messages:
            self._deliver(messages)

    def on_alert(self, alert: Alert) -> None:
        """The processor's alert listener: every stored and published anomaly."""
        if self._clients:
            self._deliver([(None, _dumps({"type": "anomaly", **alert.to_json_dict()}))])

    @staticmethod
    def _points(batch: IngestBatch, series: set[Series], wildcard: set[str]) -> list[tuple[object, str]]:
        points: dict[Series, tuple[list[int], list[float]]] = {}
        latest: dict[str, dict[str, list[float]]] = {}
        for run in batch.metric_runs:
            device, names = run.device, run.names
            wanted = [k for k, name in enumerate(names) if (device, name) in series]
            wild = [k for k, name in enumerate(names) if name in wildcard]
            if not wanted and not wild:
                continue
            times, values, index = run.times, run.values, run.name_index
            width, count = len(names), len(index)
            # The usual batch names its metrics in turn (0, 1, .., 0, 1, ..): one metric's samples are
            # then a slice with a stride, taken in C rather than a Python loop over every sample.
            cyclic = width == 1 or (count >= width and index == cycle(width, count))
            for k in wanted:
                ts, vs = points.setdefault((device, names[k]), ([], []))
                if cyclic:
                    ts += times[k::width]
                    vs += values[k::width]
                else:
                    at = [i for i, name_k in enumerate(index) if name_k == k]
                    ts += [times[i] for i in at]
                    vs += [values[i] for i in at]
            for k in wild:
                last = (k + width * ((count - 1 - k) // width) if cyclic and k < count
                        else next((i for i in range(count - 1, -1, -1) if index[i] == k), None))
                if last is not None:
                    latest.setdefault(names[k], {})[device] = [times[last], values[last]]
        out: list[tuple[object, str]] = []
        for (device, metric), (ts, vs) in points.items():
            message: dict[str, Any] = {"type": "points", "device": device, "metric": metric}
            if len(ts) > LIVE_POINTS:
                step = -(-len(ts) // LIVE_POINTS)
                means, lows, highs, counts = [], [], [], []
                for i in range(0, len(ts), step):
                    chunk = vs[i:i + step]
                    means.append(sum(chunk) / len(chunk))
                    lows.append(min(chunk))
                    highs.append(max(chunk))
                    counts.append(len(chunk))
                message.update(t=ts[::step], v=means, min=lows, max=highs, count=counts)
            else:
                message.update(t=ts, v=vs)
            for key in ("v", "min", "max"):
                column = message.get(key)
                if column is not None and not all(map(math.isfinite, column)):
                    message[key] = [v if math.isfinite(v) else None for v in column]
            out.append(((device, metric), _dumps(message)))
        for metric, values_by_device in latest.items():
            out.append((("*", metric), _dumps({"type": "latest", "metric": metric, "values": {
                d: [tv[0], _finite(tv[1])] for d, tv in values_by_device.items()}})))
        return out

    def _deliver(self, messages: list[tuple[object, str]]) -> None:
        loops: dict[asyncio.AbstractEventLoop, None] = {}
        for_all = [text for key, text in messages if key is None]
        by_key: dict[object, list[str]] = {}
        for key, text in messages:
            if key is not None:
                by_key.setdefault(key, []).append(text)
        with self._lock:
            self.messages += len(messages)
            for client in self._clients:
                if client.overflowed:
                    continue
                picked = list(for_all)
                if by_key:
                    for series in client.series:
                        picked += by_key.get(series, ())
                    for metric in client.wildcard:
                        picked += by_key.get(("*", metric), ())
                if not picked:
                    continue
                if len(client.queue) + len(picked) > client.max_queue:
                    client.overflowed = True  # its handler closes it; nothing more is queued for it
                    self.dropped_clients += 1
                else:
                    client.queue.extend(picked)
                loops[client.loop] = None
        for loop in loops:
            with contextlib.suppress(RuntimeError):  # the server's loop is closing
                loop.call_soon_threadsafe(self._wake, loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            clients = [c for c in self._clients if c.loop is loop]
        for client in clients:
            if client.overflowed:
                client.dropped.set()
            elif client.queue:
                client.wake.set()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


