"""The HTTP API and live feed under load: history queries, live-feed delay, ingest with clients attached.

    python bench/api.py [--clients 100] [--queries 30] [--devices 50] [--batches 100] [--samples 100]

Three measurements, each beside its baseline in the same run:

1. History: a day of one device at 1 sample/s for each of 8 metrics in SQLite
   (691,200 samples); ``GET .../metrics/m0/history?points=500`` over the day,
   over HTTP on loopback, p50 and p99 of ``--queries`` requests, beside reading
   the same day of ``m0`` straight from the store in Python
   (:meth:`Store.samples`, 86,400 rows) in the same process.
2. Live-feed delay: ``--clients`` WebSocket clients (another process, asyncio)
   each follow one device's series while 20 devices publish 8 samples a second
   each through Mosquitto, stamped with the wall clock when published; the
   delay is publish-to-client (so it includes the broker's hop, well under a
   millisecond here), p50 and p99 over every point every client received.
   Target: p99 under 100 ms.
3. Ingest: samples/s through the coordinator's full path (decode, score, store,
   live view, live feed) for a pre-encoded stream (``--devices`` x ``--batches``
   messages of ``--samples`` samples at QoS 1), with ``--clients`` clients
   attached and following ``*/m0`` and one device's 10 metrics each, beside
   the same with none attached; alternated, best of two each.
   Target: with / without >= 0.9.

The coordinator runs in this process as ``edge-coordinator start`` wires it;
the publishers and the clients are separate processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.ingest import make_stream, publish  # noqa: E402
from bench.mosquitto import start_mosquitto, stop  # noqa: E402
from bench.results import record  # noqa: E402
from broker.session import BusConfig, BusSession  # noqa: E402
from coordinator.anomaly.engine import AnomalyEngine  # noqa: E402
from coordinator.fleet_view import FleetView  # noqa: E402
from coordinator.http.app import build_app  # noqa: E402
from coordinator.http.config import HttpConfig  # noqa: E402
from coordinator.http.context import ApiContext  # noqa: E402
from coordinator.http.live_feed import LiveFeed  # noqa: E402
from coordinator.http.server import HttpServer  # noqa: E402
from coordinator.ingest import Ingest, IngestBatch  # noqa: E402
from coordinator.processor import FleetProcessor  # noqa: E402
from coordinator.store.base import Store, open_store  # noqa: E402
from coordinator.store.records import WriteBatch  # noqa: E402
from schemas.metrics import MetricColumns  # noqa: E402

DAY_MS = 86_400_000
METRICS = [f"m{i}" for i in range(8)]

# N asyncio WebSocket clients; each subscribes, tells the parent it is ready (a line on stdout),
# records publish-to-arrival delays of "points" messages until told to stop (stdin closes), then
# prints one JSON line: delays (ms) and messages received.
CLIENTS = textwrap.dedent("""
    import asyncio, json, sys, time
    from websockets.asyncio.client import connect
    url, n, mode, devices = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    delays, counts = [], [0]

    async def client(i, ready):
        device = f"bench-{i % devices:03d}"
        if mode == "delay":
            series = [f"{device}/m0"]
        else:
            series = ["*/m0"] + [f"{device}/m{k}" for k in range(10)]
        async with connect(url, max_size=None, ping_interval=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"subscribe": series}))
            await ws.recv()
            ready.append(i)
            async for text in ws:
                now = time.time() * 1000
                counts[0] += 1
                if mode == "delay" and text.startswith('{"type":"points"'):
                    m = json.loads(text)
                    delays.extend(now - t for t in m["t"])

    async def main():
        ready = []
        tasks = [asyncio.create_task(client(i, ready)) for i in range(n)]
        while len(ready) < n:
            await asyncio.sleep(0.05)
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for t in tasks:
            t.cancel()
        print(json.dumps({"delays": delays, "messages": counts[0]}), flush=True)

    asyncio.run(main())
""")

# Publishes 8 samples per device per second, each stamped with the wall clock when sent.
LIVE_PUBLISHER = textwrap.dedent("""
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    sys.path.insert(0, sys.argv[4])
    from schemas.messages import MetricSample, MetricsBatch, encode_record
    port, devices, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-live-pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    seq = [0] * devices
    end = time.monotonic() + seconds
    tick = 1 / 8
    next_at = time.monotonic()
    while time.monotonic() < end:
        for d in range(devices):
            now = time.time_ns() // 1_000_000
            batch = MetricsBatch(device=f"bench-{d:03d}", epoch=1, first_seq=seq[d],
                                 samples=(MetricSample(now, "m0", 20.0 + (seq[d] % 7)),))
            seq[d] += 1
            c.publish(f"edgebus/bench-{d:03d}/metrics", encode_record(batch), qos=1)
        next_at += tick
        time.sleep(max(0.0, next_at - time.monotonic()))
    c.loop_stop()
    c.disconnect()
""")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Coordinator:
    """Store, ingest, processor, live view, live feed and the HTTP server, as the CLI wires them."""

    def __init__(self, port: int, workdir: Path, store: Store | None = None) -> None:
        self.store = store or open_store({}, data_dir=workdir)
        self.bus = BusSession(BusConfig(port=port, client_id=f"bench-coordinator-{os.getpid()}",
                                        clean_start=True, protocol="3.1.1"))
        self.ingest = Ingest(self.bus)
        self.processor = FleetProcessor(self.bus, self.ingest, self.store, AnomalyEngine(), data_dir=workdir,
                                        checkpoint_interval=1e9)
        self.view = FleetView(self.ingest.sequence_snapshot)
        self.feed = LiveFeed(10_000)
        self.processor.alert_listeners.append(self.feed.on_alert)
        self.ingest.sinks += [self.feed, self.processor, self.view]  # as the CLI: live points first
        config = HttpConfig(port=0, live_queue=10_000)
        context = ApiContext(store=self.store, config=config, feed=self.feed, session=self.bus,
                             ingest=self.ingest, processor=self.processor, view=self.view)
        self.server = HttpServer(build_app(context), config).start()
        self.ingest.start()
        self.bus.start()
        if not self.bus.wait_subscribed(10):
            raise SystemExit("the coordinator could not subscribe")

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http://", "ws://") + "api/v1/ws"

    def close(self) -> None:
        self.server.stop()
        self.bus.stop(flush_timeout=0)
        self.ingest.stop()
        self.store.close()


def start_clients(url: str, n: int, mode: str, devices: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CLIENTS, url, str(n), mode, str(devices)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("the WebSocket clients did not connect")
    return proc


def finish_clients(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate("", timeout=60)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- 1. history ---------------------------------------------------------------------------------

def fill_day(store: Store, end_ms: int) -> None:
    """A day of 8 metrics at 1 sample/s each for one device, an hour per write."""
    start = end_ms - DAY_MS
    seq = 0
    for hour in range(24):
        times, index, values = [], [], []
        for s in range(3600):
            t = start + (hour * 3600 + s) * 1000
            for k in range(len(METRICS)):
                times.append(t)
                index.append(k)
                values.append(20.0 + ((seq + k * 13) % 97) * 0.31)
        store.write_batch(WriteBatch(sample_columns=[MetricColumns("bench-day", 1, seq, METRICS, index, times,
                                                                   values)]))
        seq += len(times)


def history_bench(workdir: Path, port: int, queries: int) -> tuple[list[float], list[float], int]:
    store = open_store({}, data_dir=workdir / "history")
    end = time.time_ns() // 1_000_000
    fill_day(store, end)
    coordinator = Coordinator(port, workdir / "history", store)
    try:
        since, until = end - DAY_MS, end
        direct, api = [], []
        url = f"{coordinator.server.url}api/v1/devices/bench-day/metrics/m0/history"
        with httpx.Client(timeout=60) as client:
            for _ in range(queries):  # alternated, so both see the same machine
                t = time.perf_counter()
                rows = store.samples("bench-day", "m0", since, until)
                direct.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                body = client.get(url, params={"since": since, "until": until, "points": 500}).json()
                api.append((time.perf_counter() - t) * 1000)
        if body["raw_samples"] != len(rows) or len(body["t"]) > 500:
            raise SystemExit(f"the API summarised {body['raw_samples']} samples, the store holds {len(rows)}")
        return direct, api, len(rows)
    finally:
        coordinator.close()


# -- 2. live-feed delay -------------------------------------------------------------------------

def delay_bench(workdir: Path, port: int, clients: int, seconds: float) -> tuple[list[float], int]:
    coordinator = Coordinator(port, workdir / "delay")
    try:
        devices = 20
        proc = start_clients(coordinator.ws_url, clients, "delay", devices)
        pub = subprocess.Popen([sys.executable, "-c", LIVE_PUBLISHER, str(port), str(devices), str(seconds),
                                str(REPO)])
        pub.wait(seconds + 60)
        coordinator.ingest.drain(30)
        time.sleep(0.5)  # the last points on their way to the clients
        result = finish_clients(proc)
        return result["delays"], result["messages"]
    finally:
        coordinator.close()


# -- 3. ingest with and without clients -------------------------------------------------------------

class Done:
    def __init__(self, target: int) -> None:
        self.samples, self.target, self.first = 0, target, 0.0
        self.event = threading.Event()

    def __call__(self, batch: IngestBatch) -> None:
        if not self.samples and batch.sample_count:
            self.first = time.perf_counter()
        self.samples += batch.sample_count
        if self.samples >= self.target:
            self.event.set()


def ingest_run(workdir: Path, port: int, stream: Path, total: int, clients: int,
               devices: int) -> tuple[float, int]:
    coordinator = Coordinator(port, workdir)
    done = Done(total)
    coordinator.ingest.sinks.append(done)
    proc = start_clients(coordinator.ws_url, clients, "ingest", devices) if clients else None
    try:
        pub = publish(port, stream)
        if not done.event.wait(600):
            raise SystemExit(f"ingest saw {done.samples} of {total} samples")
        if not coordinator.ingest.drain(120):
            raise SystemExit("the store did not finish")
        rate = total / (time.perf_counter() - done.first)
        pub.wait(60)
        stored = coordinator.store.count_samples()
        if stored != total:
            raise SystemExit(f"stored {stored} of {total} samples")
        messages = finish_clients(proc)["messages"] if proc is not None else 0
        if coordinator.feed.dropped_clients:
            raise SystemExit(f"{coordinator.feed.dropped_clients} clients were dropped")
        return rate, messages
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        coordinator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=15.0, help="live-feed delay run length")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()} clients={args.clients}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker, port = start_mosquitto(workdir)
        try:
            direct, api, rows = history_bench(workdir, port, args.queries)
            delays, received = delay_bench(workdir, port, args.clients, args.seconds)
            stream = workdir / "stream.bin"
            messages = make_stream(stream, args.devices, args.batches, args.samples)
            total = messages * args.samples
            rates: dict[int, list[float]] = {0: [], args.clients: []}
            fed = 0
            for run in range(2):
                for n in (0, args.clients):
                    rate, got = ingest_run(workdir / f"ingest-{run}-{n}", port, stream, total, n,
                                           args.devices)
                    rates[n].append(rate)
                    fed = max(fed, got)
        finally:
            stop(broker)

    print(f"\n1. history of one metric over 24 h ({rows} samples at 1/s among 8 metrics), "
          f"{args.queries} queries")
    print(f"   store.samples() in Python:             p50 {statistics.median(direct):7.1f} ms  "
          f"p99 {pct(direct, 0.99):7.1f} ms")
    print(f"   GET .../history?points=500 over HTTP:  p50 {statistics.median(api):7.1f} ms  "
          f"p99 {pct(api, 0.99):7.1f} ms")
    ratio = statistics.median(api) / statistics.median(direct)
    print(f"   ratio API / store read (p50): {ratio:.2f}")
    print(f"\n2. live feed: {args.clients} clients, 20 devices x 8 samples/s, {args.seconds:g} s")
    if delays:
        print(f"   {len(delays)} points delivered ({received} messages); publish-to-client delay "
              f"p50 {pct(delays, 0.5):.1f} ms  p99 {pct(delays, 0.99):.1f} ms  max {max(delays):.1f} ms")
    without, with_clients = max(rates[0]), max(rates[args.clients])
    print(f"\n3. ingest of {total} samples ({messages} messages x {args.samples}), decode + score + store + "
          "live view + live feed")
    runs = ", ".join(f"{r:.0f}" for r in rates[0])
    print(f"   no clients:          {without:9.0f} samples/s  (runs: {runs})")
    print(f"   {args.clients} clients attached: {with_clients:9.0f} samples/s  "
          f"(runs: {', '.join(f'{r:.0f}' for r in rates[args.clients])}; {fed} messages sent to them)")
    print(f"   ratio: {with_clients / without:.2f}")
    print()
    expected = args.clients * 20 * 8 * args.seconds / 20  # each client follows one of 20 devices
    complete = len(delays) >= 0.9 * expected
    print(f"{'PASS' if ratio <= 1.0 else 'MISS'}  history p50 {statistics.median(api):.1f} ms over HTTP vs "
          f"{statistics.median(direct):.1f} ms reading the raw samples (target: no slower)")
    print(f"{'PASS' if delays and pct(delays, 0.99) < 100 and complete else 'MISS'}  live-feed delay p99 "
          f"{pct(delays, 0.99) if delays else float('nan'):.1f} ms with {args.clients} clients "
          f"(target < 100 ms, {len(delays)} of ~{expected:.0f} points)")
    print(f"{'PASS' if with_clients >= 0.9 * without else 'MISS'}  ingest with {args.clients} clients / "
          f"without {with_clients / without:.2f} (target >= 0.9)")
    record("history query p50 over HTTP", statistics.median(api), "ms", baseline="store.samples() in Python",
           baseline_value=statistics.median(direct), target="no slower than the store read", ok=ratio <= 1.0)
    record("live-feed delay p99", pct(delays, 0.99) if delays else float("nan"), "ms",
           target="< 100 ms, >= 90% of points", ok=bool(delays) and pct(delays, 0.99) < 100 and complete)
    record(f"ingest with {args.clients} clients", with_clients, "samples/s", baseline="no clients",
           baseline_value=without, target=">= 0.9 x no clients", ok=with_clients >= 0.9 * without)


if __name__ == "__main__":
    main()
