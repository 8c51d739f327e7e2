"""Coordination benchmark: a 3-node Raft group (separate processes) over a local Mosquitto.

Prints lock acquire+release latency p50/p99 (target p50 < 5 ms), lock
operations per second (target 1,000/s; an acquire and a release are one
operation each) and leader failover time after kill -9 (target < 500 ms),
each with PASS/MISS, beside a baseline from the same broker in the same run:
a raw paho request/reply round trip (publish -> echo client -> reply).

    .venv/bin/python bench/coordination.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mosquitto import start_mosquitto, stop
from bench.results import record, verdict
from broker.coordination import LockClient, RaftClient
from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.session import BusConfig, BusSession
from schemas.errors import CoordinationError

NODES = ["n1", "n2", "n3"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def baseline_rtt(port: int, n: int = 500) -> list[float]:
    """paho publish -> echo client -> reply, QoS 1, TCP_NODELAY on both clients."""
    a = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-req")
    b = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-echo")
    got = threading.Event()
    b.on_message = lambda c, u, m: b.publish("bench/reply", m.payload, qos=1)
    a.on_message = lambda c, u, m: got.set()
    for c in (a, b):
        c.connect("127.0.0.1", port)
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.loop_start()
    b.subscribe("bench/req", 1)
    a.subscribe("bench/reply", 1)
    time.sleep(0.3)
    lat = []
    for _ in range(n):
        got.clear()
        t = time.perf_counter()
        a.publish("bench/req", b"x", qos=1)
        got.wait(2)
        lat.append(time.perf_counter() - t)
    for c in (a, b):
        c.loop_stop()
        c.disconnect()
    return lat


def lock_latency(client: LockClient, n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        token = client.acquire("bench/latency")
        client.release("bench/latency", token)
        lat.append(time.perf_counter() - t)
    return lat


def lock_throughput(bus: BusConfig, seconds: float, clients: int) -> float:
    stop_at = time.monotonic() + seconds
    counts = [0] * clients
    lcs = [LockClient.connect(bus, "bench", f"tp{i}", ttl_ms=10_000) for i in range(clients)]

    def run(i: int) -> None:
        while time.monotonic() < stop_at:
            token = lcs[i].acquire(f"bench/tp{i}")
            lcs[i].release(f"bench/tp{i}", token)
            counts[i] += 2

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    for lc in lcs:
        lc.close()
    return sum(counts) / elapsed


def failover(cluster: LocalCluster, watcher: GroupWatcher, client: RaftClient) -> tuple[float, float]:
    """(kill -9 -> new leader seen on the bus, kill -9 -> first acknowledged append) in seconds."""
    old = watcher.leader(NODES, timeout=10)
    assert old is not None
    client.append(b"warm")
    survivors = [n for n in NODES if n != old]
    t0 = time.monotonic()
    cluster.kill(old)
    elected: list[float] = []

    def watch() -> None:
        if watcher.leader(survivors, timeout=10, not_=old):
            elected.append(time.monotonic() - t0)

    w = threading.Thread(target=watch)
    w.start()
    while True:
        try:
            client.append(b"after-kill", timeout=10)
            break
        except CoordinationError:
            continue
    acked = time.monotonic() - t0
    w.join()
    return (elected[0] if elected else float("nan")), acked


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker, port = start_mosquitto(work, nodelay=True)
        bus = BusConfig(port=port, client_id="bench", clean_start=True)
        cluster = LocalCluster(bus, "bench", work / "raft")
        session = BusSession(bus)
        watcher = GroupWatcher(session, "bench")
        raft = RaftClient(session, "bench", "bench-raft", retry_interval=0.02)
        session.start()
        session.wait_connected(10)
        try:
            base = baseline_rtt(port)
            cluster.start()
            if watcher.leader(NODES, timeout=15) is None:
                raise SystemExit("no leader elected")
            raft.append(b"warmup")
            with LockClient.connect(bus, "bench", "bench-lat", ttl_ms=10_000) as lc:
                lock_latency(lc, 20)
                lat = lock_latency(lc, args.samples)
            ops = lock_throughput(bus, args.seconds, args.clients)
            elected, acked = failover(cluster, watcher, raft)
        finally:
            cluster.stop()
            session.stop(flush_timeout=0)
            stop(broker)
    p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
    b50, b99 = pct(base, 0.5) * 1000, pct(base, 0.99) * 1000
    print("coordination benchmark: 3-node Raft group (separate processes), local Mosquitto, SQLite "
          "synchronous=FULL")
    print(f"  baseline  raw MQTT request/reply RTT (paho, QoS 1)   p50 {b50:7.2f} ms   p99 {b99:7.2f} ms  "
          f"(mean {statistics.mean(base) * 1000:.2f} ms)")
    print(f"  lock acquire+release latency                         p50 {p50:7.2f} ms   p99 {p99:7.2f} ms  "
          f"target p50 < 5 ms      {verdict(p50 < 5)}")
    print(f"  lock operations/s ({args.clients} clients, acquire and release = 1 op each) "
          f"{ops:9.0f} ops/s       target 1,000/s         {verdict(ops >= 1000)}")
    print(f"  failover after kill -9 leader: new leader on the bus {elected * 1000:7.0f} ms        "
          f"target < 500 ms        {verdict(elected < 0.5)}")
    print(f"                                 first acked append    {acked * 1000:7.0f} ms        "
          f"(client retry every 20 ms)")
    record("Raft lock acquire+release p50", p50, "ms", baseline="raw MQTT request/reply p50",
           baseline_value=b50, target="< 5 ms", ok=p50 < 5)
    record("Raft lock operations/s", ops, "ops/s", target=">= 1,000/s", ok=ops >= 1000)
    record("Raft leader failover after kill -9", elected * 1000, "ms", target="< 500 ms", ok=elected < 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
