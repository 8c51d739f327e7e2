"""The WebSocket live feed: what a client receives, and a slow client dropped without slowing ingest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from coordinator.http.live_feed import CLOSE_TOO_SLOW, LIVE_POINTS, LiveFeed
from coordinator.ingest import IngestBatch
from schemas.metrics import MetricColumns
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import WAIT, wait_until
from tests.http_helpers import ApiCoordinator, Sender, api_coordinator, metrics_batch, normal

DEVICE = "gw-9"


def receive_until(ws: ClientConnection, predicate: Any, timeout: float = WAIT) -> dict[str, Any]:
    """The first message matching ``predicate`` (others are skipped); fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no matching live-feed message"
        message = json.loads(ws.recv(timeout=remaining))
        if predicate(message):
            return message  # type: ignore[no-any-return]


@pytest.fixture
def api(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[ApiCoordinator]:
    # Small kernel send buffers: a client that stops reading holds the server's sends back in
    # kilobytes rather than megabytes.
    with api_coordinator(mosquitto_broker, tmp_path / "coordinator", live_queue=50,
                         send_buffer=32 * 1024) as running:
        yield running


@pytest.mark.integration
def test_a_client_gets_statuses_points_and_anomalies(api: ApiCoordinator,
                                                      mosquitto_broker: MosquittoUnderTest) -> None:
    sender = Sender(mosquitto_broker)
    try:
        with connect(api.ws_url + f"?series={DEVICE}/cpu_percent") as ws:
            hello = json.loads(ws.recv(timeout=WAIT))
            assert hello["type"] == "hello" and hello["series"] == [f"{DEVICE}/cpu_percent"]
            ws.send(json.dumps({"subscribe": ["*/temp_c"]}))
            assert receive_until(ws, lambda m: m["type"] == "subscribed")["series"] == [
                "*/temp_c", f"{DEVICE}/cpu_percent"]
            ws.send("not json")
            assert "JSON" in receive_until(ws, lambda m: m["type"] == "error")["message"]

            sender.publish(f"edgebus/{DEVICE}/status", "online", retain=True)
            status = receive_until(ws, lambda m: m["type"] == "status")
            assert (status["device"], status["status"]) == (DEVICE, "online")

            sender.publish(f"edgebus/{DEVICE}/metrics", metrics_batch(DEVICE, 0, normal(50, 0)))
            sender.publish(f"edgebus/{DEVICE}/metrics",
                           metrics_batch(DEVICE, 50, [20.5, 21.5], metric="temp_c"))
            sender.publish(f"edgebus/{DEVICE}/metrics", metrics_batch(DEVICE, 52, [97.0]))
            points: list[float] = []
            while len(points) < 51:
                m = receive_until(ws, lambda m: m["type"] == "points")
                assert (m["device"], m["metric"]) == (DEVICE, "cpu_percent") and len(m["t"]) == len(m["v"])
                points += m["v"]
            assert points == [*normal(50, 0), 97.0]
            latest = receive_until(ws, lambda m: m["type"] == "latest")
            assert latest["metric"] == "temp_c" and latest["values"][DEVICE][1] == 21.5
            anomaly = receive_until(ws, lambda m: m["type"] == "anomaly")
            assert (anomaly["device"], anomaly["metric"], anomaly["value"]) == (DEVICE, "cpu_percent", 97.0)
    finally:
        sender.stop()


@pytest.mark.integration
def test_a_slow_client_is_dropped_and_ingest_and_other_clients_go_on(
        api: ApiCoordinator, mosquitto_broker: MosquittoUnderTest) -> None:
    sender = Sender(mosquitto_broker)
    got_by_fast: list[int] = []
    published = [0]
    fast_done = threading.Event()

    def fast_reader(ws: ClientConnection) -> None:
        deadline = time.monotonic() + 120
        try:
            while not (published[0] and sum(got_by_fast) >= published[0]) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    m = json.loads(ws.recv(timeout=0.5))
                    if m["type"] == "points":  # raw points, or runs of them summarised with a count
                        got_by_fast.append(sum(m["count"]) if "count" in m else len(m["v"]))
        finally:
            fast_done.set()

    devices = [f"gw-{d:02d}" for d in range(50)]
    series = ",".join(f"{d}/cpu_percent" for d in devices)
    try:
        # No keepalive pings from these clients (a browser sends none either): a client that stops
        # reading would otherwise miss the pongs and close the connection itself.
        # The slow client's socket takes little (a small receive buffer, four messages queued in the
        # client library) before TCP stops the server, so its queue on the server fills soon.
        tight = socket.create_connection(("127.0.0.1", api.server.port))
        tight.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with connect(api.ws_url + f"?series={series}", sock=tight, ping_interval=None, max_queue=4) as slow, \
                connect(api.ws_url + f"?series={series}", ping_interval=None) as fast:
            assert json.loads(slow.recv(timeout=WAIT))["type"] == "hello"
            assert json.loads(fast.recv(timeout=WAIT))["type"] == "hello"
            reader = threading.Thread(target=fast_reader, args=(fast,), daemon=True)
            reader.start()
            # The slow client reads nothing while rounds of a message of 200 samples from each of 50
            # devices arrive (a points message per device per batch, ~0.1 MB a round), until the
            # kernel's buffers, then the transport's, then its queue on the feed are full.
            sent = 0
            for k in range(60):
                for device in devices:
                    sender.publish(f"edgebus/{device}/metrics",
                                   metrics_batch(device, k * 200, [float(i % 50) for i in range(200)]))
                    sent += 200
                sender.flush()
                assert wait_until(lambda n=sent: api.store.count_samples() == n, timeout=30)
                if api.feed.dropped_clients:
                    break
            published[0] = sent
            assert api.feed.dropped_clients == 1
            # Catching up now, the slow client reads what was buffered, then the server's close.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    slow.recv(timeout=WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOO_SLOW
            assert fast_done.wait(WAIT * 4) and sum(got_by_fast) == sent  # the reader kept up: all of it
            assert wait_until(lambda: api.feed.client_count == 1)
        assert api.ingest.stats().sink_errors == 0
    finally:
        sender.stop()


def test_the_producer_never_waits_for_a_stalled_client() -> None:
    """A client whose loop never drains: the feed marks it after max_queue messages and moves on."""
    loop = asyncio.new_event_loop()  # never run: nothing is ever taken off the client's queue
    try:
        feed = LiveFeed(max_queue=10)
        client = feed.connect(loop)
        feed.subscribe(client, ["gw-1/cpu"])
        run = MetricColumns("gw-1", 1, 0, ["cpu"], [0], [1_000], [1.0])
        for _ in range(1000):  # with a producer that waited for the client, this would never end
            feed(IngestBatch(metric_runs=[run]))
        assert client.overflowed and len(client.queue) == 10 and feed.dropped_clients == 1
        other = feed.connect(loop)  # a new client is served as usual
        feed.subscribe(other, ["gw-1/cpu"])
        feed(IngestBatch(metric_runs=[run]))
        assert len(other.queue) == 1 and not other.overflowed
    finally:
        loop.close()


def test_points_of_any_layout_and_summaries_beyond_the_cap() -> None:
    """Samples named in any order reach the right series; a burst beyond LIVE_POINTS comes as runs."""
    loop = asyncio.new_event_loop()
    try:
        feed = LiveFeed(max_queue=100)
        client = feed.connect(loop)
        feed.subscribe(client, ["gw-1/a", "gw-1/b", "*/b"])
        mixed = MetricColumns("gw-1", 1, 0, ["a", "b"], [1, 1, 0, 1], [10, 20, 30, 40], [1.0, 2.0, 3.0, 4.0])
        feed(IngestBatch(metric_runs=[mixed]))
        messages = [json.loads(text) for text in client.take()]
        points = {m["metric"]: (m["t"], m["v"]) for m in messages if m["type"] == "points"}
        assert points == {"a": ([30], [3.0]), "b": ([10, 20, 40], [1.0, 2.0, 4.0])}
        assert [m["values"] for m in messages if m["type"] == "latest"] == [{"gw-1": [40, 4.0]}]

        n = LIVE_POINTS * 3 + 5
        burst = MetricColumns("gw-1", 1, 4, ["a"], [0] * n, list(range(n)), [float(i) for i in range(n)])
        feed(IngestBatch(metric_runs=[burst]))
        [summary] = [json.loads(text) for text in client.take()]
        assert len(summary["t"]) <= LIVE_POINTS and sum(summary["count"]) == n
        assert summary["min"][0] == 0.0 and summary["max"][-1] == n - 1
        assert summary["v"][0] == sum(range(summary["count"][0])) / summary["count"][0]
    finally:
        loop.close()
