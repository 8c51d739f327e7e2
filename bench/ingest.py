"""Samples per second through one coordinator process, beside mosquitto_sub as the ceiling.

    python bench/ingest.py [--devices 50] [--batches 200] [--samples 100] [--decode-only | --view]
                           [--client paho|gmqtt]

A publisher process sends pre-encoded metrics batches (``--devices`` x
``--batches`` messages of ``--samples`` samples, consecutive sequence numbers)
at QoS 1 through a local Mosquitto. Measured in the same run, one after the
other, with the same publisher:

* ceiling: ``mosquitto_sub -q 1 -C N`` receiving the same N messages (discarding them);
* edgebus: :class:`~coordinator.ingest.Ingest` in this process decoding, de-duplicating
  and accounting every sample, scoring each with the anomaly engine and storing it in
  SQLite (the coordinator's default path; ``--decode-only`` leaves out scoring and store;
  ``--view`` adds the live view's sink, as ``edge-coordinator`` runs it). The clock stops
  when the last sample is stored (the processor stores on a writer thread).

``--client gmqtt`` receives the stream with gmqtt (asyncio, acknowledging each
message after the handler ran, as paho does; ``--client gmqtt-optimistic``
acknowledges before it) instead of the session's paho
client, to weigh a switch of the coordinator's ingest path (gmqtt must be
installed; anomalies are still published through a paho session).

Printed: messages/s and samples/s of both, the ratio, the store's size on disk
per sample (beside the wire's), and whether every sample arrived exactly once
(sequence accounting: missing and duplicates must be 0).
Targets: >= 100,000 samples/s with zero loss at QoS 1, and >= half the
mosquitto_sub message rate.

``--latency 250,500,1000,2000`` measures end-to-end latency against offered
load instead: a paced publisher sends messages of 10 samples at each rate for
``--latency-seconds``; the latency of a message is from its publish call to
the moment the coordinator's store committed it (decoded, scored, stored:
the store's ``write_batches`` returned), both clocks CLOCK_MONOTONIC. The
baseline at each rate is a minimal paho subscriber's publish-to-delivery time
in the same run. Target (issue 18): p99 under 10 ms at 1,000 messages/s.
The coordinator's ingest gathers messages for up to its batch window (0.2 s
by default) before it decodes them, which bounds latency from below under
steady load; ``--batch-wait`` runs the sweep with another window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.mosquitto import start_mosquitto, stop  # noqa: E402
from bench.results import record, save_curve  # noqa: E402
from broker.router import Handler, ReceivedMessage, Route, SubscriptionRouter  # noqa: E402
from broker.session import BusConfig, BusSession  # noqa: E402
from coordinator.ingest import Ingest, IngestBatch  # noqa: E402
from coordinator.ingest_limits import IngestLimits  # noqa: E402
from coordinator.store.plugins.sql import DEFAULT_DB_NAME  # noqa: E402
from schemas.messages import MetricSample, MetricsBatch, encode_record  # noqa: E402
from schemas.topics import TopicTree  # noqa: E402

# Both publisher scripts read the messages file (2-byte topic length, 4-byte payload length, topic,
# payload) and connect the same way; %(client_id)s is filled in per script.
_LOAD_AND_CONNECT = textwrap.dedent("""
    data = open(path, "rb").read()
    messages, pos = [], 0
    while pos < len(data):
        tlen = int.from_bytes(data[pos:pos + 2], "big"); plen = int.from_bytes(data[pos + 2:pos + 6], "big")
        pos += 6
        messages.append((data[pos:pos + tlen].decode(), data[pos + tlen:pos + tlen + plen]))
        pos += tlen + plen
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="%(client_id)s")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
""")

PUBLISHER = textwrap.dedent("""
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    port, path = int(sys.argv[1]), sys.argv[2]
""") + _LOAD_AND_CONNECT % {"client_id": "bench-pub"} + textwrap.dedent("""
    infos = [c.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(60)
    c.loop_stop()
    c.disconnect()
""")


PACED_PUBLISHER = textwrap.dedent("""
    import json, sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    port, path, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
""") + _LOAD_AND_CONNECT % {"client_id": "bench-paced-pub"} + textwrap.dedent("""
    sent, infos = [], []
    start = time.monotonic()
    for k, (t, p) in enumerate(messages):
        pause = start + k / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sent.append(time.monotonic_ns())
        infos.append(c.publish(t, p, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    c.loop_stop()
    c.disconnect()
    print(json.dumps(sent))
""")
LATENCY_SAMPLES = 10  # samples per message in the latency sweep (an agent's batch of a few metrics)
LATENCY_TARGET_RATE = 1_000
LATENCY_TARGET_MS = 10.0


def make_stream(path: Path, devices: int, batches: int, samples: int) -> int:
    """Write ``devices * batches`` (topic, payload) pairs, interleaved by device; the count."""
    encoded = []
    for b in range(batches):
        for d in range(devices):
            device = f"bench-{d:03d}"
            batch = MetricsBatch(device=device, epoch=1, first_seq=b * samples, samples=tuple(
                MetricSample(1_763_900_000_000 + (b * samples + i) * 10, f"m{i % 10}",
                             round(20 + (i * 7 + b) % 50 * 0.37, 2)) for i in range(samples)))
            encoded.append((f"edgebus/{device}/metrics".encode(), encode_record(batch)))
    with path.open("wb") as f:
        for topic, payload in encoded:
            f.write(len(topic).to_bytes(2, "big") + len(payload).to_bytes(4, "big") + topic + payload)
    return len(encoded)


def publish(port: int, stream: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), str(stream)])


def ceiling(port: int, stream: Path, messages: int) -> float:
    """mosquitto_sub's message rate for the stream (from its first message to its last)."""
    binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
    sub = subprocess.Popen([binary, "-p", str(port), "-q", "1", "-C", str(messages), "-t",
                            "edgebus/+/metrics", "-F", "%t"], stdout=subprocess.PIPE)
    time.sleep(0.5)
    pub = publish(port, stream)
    assert sub.stdout is not None
    sub.stdout.readline()
    start = time.perf_counter()
    for _ in range(messages - 1):
        sub.stdout.readline()
    elapsed = time.perf_counter() - start
    sub.wait(60)
    pub.wait(120)
    return (messages - 1) / elapsed


class GmqttReceiver:
    """What :class:`Ingest` uses of a session (``topics``, ``subscribe``) on a gmqtt client.

    An event loop on a thread of its own; handlers run on it. For this benchmark only.
    """

    def __init__(self, port: int, *, optimistic: bool = False) -> None:
        import gmqtt

        self._gmqtt = gmqtt
        self.port = port
        self.topics = TopicTree("edgebus")
        self.router = SubscriptionRouter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gmqtt", daemon=True)
        self._client = gmqtt.Client("bench-coordinator", clean_session=True,
                                    optimistic_acknowledgement=optimistic)
        self._client.on_message = self._on_message if optimistic else self._on_message_then_ack
        self._subacks = 0
        self._subscribed = threading.Event()
        self._client.on_subscribe = self._on_subscribe

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> Route:
        return self.router.add(topic_filter, handler, qos)  # sent at start (Ingest subscribes first)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(10)

    async def _connect(self) -> None:
        from gmqtt.mqtt.constants import MQTTv311

        await self._client.connect("127.0.0.1", self.port, version=MQTTv311)
        for topic_filter, qos in self.router.subscriptions():
            self._client.subscribe(self._gmqtt.Subscription(topic_filter, qos=qos))

    def _on_subscribe(self, client: object, mid: int, qos: object, properties: object) -> None:
        self._subacks += 1
        if self._subacks == len(self.router.subscriptions()):
            self._subscribed.set()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def _on_message(self, client: object, topic: str, payload: bytes, qos: int,
                    properties: dict[str, object]) -> int:
        self.router.dispatch(ReceivedMessage(topic, payload, qos, bool(properties.get("retain"))))
        return 0  # PUBACK reason code: success

    async def _on_message_then_ack(self, client: object, topic: str, payload: bytes, qos: int,
                                   properties: dict[str, object]) -> int:
        # gmqtt 0.8 acknowledges after the handler only for a coroutine (a task per
        # message); after a plain function it would never send the PUBACK.
        return self._on_message(client, topic, payload, qos, properties)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._client.disconnect(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Counter:
    def __init__(self, target: int) -> None:
        self.samples = 0
        self.first: float | None = None
        self.done = threading.Event()
        self.target = target

    def __call__(self, batch: IngestBatch) -> None:
        count = batch.sample_count  # not len(batch.samples): that would build a row per sample
        if self.first is None and count:
            self.first = time.perf_counter()
        self.samples += count
        if self.samples >= self.target:
            self.done.set()


def edgebus(port: int, stream: Path, total_samples: int, workdir: Path,
            full: bool, view: bool = False, client: str = "paho") -> tuple[float, Ingest, int | None]:
    bus = BusSession(BusConfig(port=port, client_id="bench-coordinator-paho", clean_start=True,
                               protocol="3.1.1"))
    receiver = (None if client == "paho"
                else GmqttReceiver(port, optimistic=client == "gmqtt-optimistic"))
    counter = Counter(total_samples)
    # The default limits, but per-device rates no single publisher can reach: a run with few devices
    # sends each of them faster than a device may (the rate check still runs on every message).
    limits = IngestLimits(device_messages_per_s=1e9, device_samples_per_s=1e11)
    ingest = Ingest(bus if receiver is None else receiver, limits=limits)  # type: ignore[arg-type]
    store = None
    if full:
        from coordinator.anomaly.engine import AnomalyEngine
        from coordinator.processor import FleetProcessor
        from coordinator.store.base import open_store

        store = open_store({}, data_dir=workdir)
        processor = FleetProcessor(bus, ingest, store, AnomalyEngine(), data_dir=workdir,
                                   checkpoint_interval=1e9)
        ingest.sinks.append(processor)
        if view:
            from coordinator.fleet_view import FleetView

            ingest.sinks.append(FleetView(ingest.sequence_snapshot, forecast=processor.forecast))
    ingest.sinks.append(counter)
    ingest.start()
    bus.start()
    if receiver is not None:
        receiver.start()
        receiver.wait_subscribed(10)
    bus.wait_subscribed(10)
    pub = publish(port, stream)
    finished = counter.done.wait(300)
    # The processor stores on its own thread: the clock stops when the last sample is stored.
    stored_all = ingest.drain(120)
    end = time.perf_counter()
    if not stored_all:
        raise SystemExit("edgebus ingest did not finish storing within 120 s")
    pub.wait(120)
    if receiver is not None:
        receiver.stop()
    bus.stop(flush_timeout=0)
    ingest.stop()
    size = None
    if store is not None:
        stored = store.count_samples()
        store.close()
        if stored != total_samples:
            raise SystemExit(f"stored {stored} of {total_samples} samples")
        size = sum(f.stat().st_size for f in workdir.glob(f"{DEFAULT_DB_NAME}*"))
    if not finished or counter.first is None:
        raise SystemExit(f"edgebus ingest saw only {counter.samples} of {total_samples} samples")
    return counter.samples / (end - counter.first), ingest, size


def paced_publish(port: int, stream: Path, rate: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PACED_PUBLISHER, str(port), str(stream), str(rate)],
                            stdout=subprocess.PIPE)


def sent_times(pub: subprocess.Popen[bytes]) -> list[int]:
    out, _ = pub.communicate(timeout=300)
    times: list[int] = json.loads(out.decode().strip().splitlines()[-1])
    return times


def latency_baseline(port: int, stream: Path, rate: float, messages: int) -> list[float]:
    """Publish-to-delivery milliseconds per message at a minimal paho subscriber (the Python ceiling)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: list[int] = []
    done, subscribed = threading.Event(), threading.Event()

    def on_message(client: object, userdata: object, msg: object) -> None:
        received.append(time.monotonic_ns())
        if len(received) >= messages:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-latency-baseline")
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe("edgebus/+/metrics", qos=1)
    subscribed.wait(10)
    sent = sent_times(paced_publish(port, stream, rate))
    done.wait(60)
    sub.loop_stop()
    sub.disconnect()
    if len(received) != messages:
        raise SystemExit(f"baseline subscriber received {len(received)} of {messages} messages")
    return [(r - s) / 1e6 for s, r in zip(sent, received, strict=True)]


def latency_edgebus(port: int, stream: Path, rate: float, messages: int, workdir: Path,
                    batch_wait: float | None = None) -> list[float]:
    """Publish-to-stored milliseconds per message through the coordinator's full path (score + store).

    Messages come from one publisher through one subscription, so they are stored in the order they were
    published: the store's n-th committed sample belongs to message n // LATENCY_SAMPLES.
    """
    from coordinator.anomaly.engine import AnomalyEngine
    from coordinator.processor import FleetProcessor
    from coordinator.store.base import open_store
    from coordinator.store.records import WriteBatch, WriteResult

    bus = BusSession(BusConfig(port=port, client_id="bench-latency-coordinator", clean_start=True,
                               protocol="3.1.1"))
    limits = IngestLimits(device_messages_per_s=1e9, device_samples_per_s=1e11)
    ingest = (Ingest(bus, limits=limits) if batch_wait is None
              else Ingest(bus, limits=limits, batch_wait=batch_wait))
    data_dir = workdir / f"latency-{rate:g}"
    data_dir.mkdir()
    store = open_store({}, data_dir=data_dir)
    commits: list[tuple[int, int]] = []  # (time the write returned, samples stored so far)
    write_batches = store.write_batches
    stored = [0]

    def timed_write(batches: list[WriteBatch]) -> list[WriteResult]:
        results = write_batches(batches)
        stored[0] += sum(r.samples_new for r in results)
        commits.append((time.monotonic_ns(), stored[0]))
        return results

    store.write_batches = timed_write  # type: ignore[method-assign]
    processor = FleetProcessor(bus, ingest, store, AnomalyEngine(), data_dir=data_dir,
                               checkpoint_interval=1e9)
    ingest.sinks.append(processor)
    ingest.start()
    bus.start()
    bus.wait_subscribed(10)
    sent = sent_times(paced_publish(port, stream, rate))
    ingest.drain(120)
    bus.stop(flush_timeout=0)
    ingest.stop()
    store.close()
    if stored[0] != messages * LATENCY_SAMPLES:
        raise SystemExit(f"stored {stored[0]} of {messages * LATENCY_SAMPLES} samples")
    delays, c = [], 0
    for n, t in enumerate(sent):
        while commits[c][1] < (n + 1) * LATENCY_SAMPLES:
            c += 1
        delays.append((commits[c][0] - t) / 1e6)
    return delays


def latency_sweep(rates: list[float], seconds: float, batch_wait: float | None) -> None:
    def pcts(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {f"p{p}": xs[min(len(xs) - 1, int(p / 100 * len(xs)))] for p in (50, 90, 99)} | {"max": xs[-1]}

    if LATENCY_TARGET_RATE not in rates:
        rates = sorted([*rates, LATENCY_TARGET_RATE])
    curve = []
    print(f"end-to-end latency (publish -> scored and stored in SQLite), {LATENCY_SAMPLES} samples/message, "
          f"{seconds:g} s per rate, QoS 1, ingest batch window "
          f"{'default' if batch_wait is None else f'{batch_wait:g} s'}, cpus={os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'msg/s':>7} | {'edgebus p50':>11} {'p90':>7} {'p99':>7} {'max':>7} | "
          f"{'paho p50':>8} {'p90':>7} {'p99':>7} {'max':>7}  (ms)")
    for rate in rates:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            stream = workdir / "stream.bin"
            devices = 20
            messages = make_stream(stream, devices, max(1, round(rate * seconds / devices)), LATENCY_SAMPLES)
            broker, port = start_mosquitto(workdir)
            try:
                base = pcts(latency_baseline(port, stream, rate, messages))
                edge = pcts(latency_edgebus(port, stream, rate, messages, workdir, batch_wait))
            finally:
                stop(broker)
        curve.append({"rate": rate, "messages": messages, "edgebus": edge, "baseline": base})
        print(f"{rate:7.0f} | {edge['p50']:11.2f} {edge['p90']:7.2f} {edge['p99']:7.2f} {edge['max']:7.2f} | "
              f"{base['p50']:8.2f} {base['p90']:7.2f} {base['p99']:7.2f} {base['max']:7.2f}", flush=True)
    at = next(c for c in curve if c["rate"] == LATENCY_TARGET_RATE)
    p99 = at["edgebus"]["p99"]
    ok = p99 < LATENCY_TARGET_MS
    print(f"{'PASS' if ok else 'MISS'}  end-to-end p99 {p99:.2f} ms at {LATENCY_TARGET_RATE:,} messages/s "
          f"(target < {LATENCY_TARGET_MS:g} ms)")
    record(f"end-to-end latency p99 at {LATENCY_TARGET_RATE:,} msg/s", p99, "ms",
           baseline="minimal paho subscriber p99", baseline_value=at["baseline"]["p99"],
           target=f"< {LATENCY_TARGET_MS:g} ms", ok=ok)
    save_curve("latency", {"samples_per_message": LATENCY_SAMPLES, "seconds": seconds,
                           "batch_wait": batch_wait, "curve": curve})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--samples", type=int, default=100, help="samples per message (default 100)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--decode-only", action="store_true",
                      help="measure decoding and accounting only (no scoring, no store)")
    mode.add_argument("--view", action="store_true",
                      help="also feed the live view, as edge-coordinator does (a row object per sample)")
    parser.add_argument("--client", choices=("paho", "gmqtt", "gmqtt-optimistic"), default="paho",
                        help="the MQTT client that receives the stream (default: the session's paho)")
    parser.add_argument("--latency", metavar="RATES",
                        help="measure end-to-end latency at these messages/s (e.g. 250,500,1000,2000)")
    parser.add_argument("--batch-wait", type=float, default=None,
                        help="the latency sweep's ingest batch window in s (default: Ingest's own)")
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="publishing time per rate")
    args = parser.parse_args()
    if args.latency:
        latency_sweep([float(r) for r in args.latency.split(",")], args.latency_seconds, args.batch_wait)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stream = workdir / "stream.bin"
        messages = make_stream(stream, args.devices, args.batches, args.samples)
        total = messages * args.samples
        stream_bytes = stream.stat().st_size
        print(f"stream: {messages} messages x {args.samples} samples = {total} samples, "
              f"{stream.stat().st_size / messages:.0f} B/message, QoS 1, cpus={os.cpu_count()}")
        broker, port = start_mosquitto(workdir)
        try:
            sub_rate = ceiling(port, stream, messages)
            rate, ingest, size = edgebus(port, stream, total, workdir, not args.decode_only, args.view,
                                         args.client)
        finally:
            stop(broker)
    stats = ingest.stats()
    snapshot = ingest.sequence_snapshot()
    missing = sum(s.missing for s in snapshot.values())
    received = sum(s.received for s in snapshot.values())
    print(f"mosquitto_sub (ceiling):  {sub_rate:9.0f} messages/s = {sub_rate * args.samples:10.0f} samples/s")
    what = "decode + accounting" if args.decode_only else "decode + score + store (SQLite)"
    what += " + live view" if args.view else ""
    what += f", {args.client}"
    print(f"edgebus ingest ({what}): {rate / args.samples:9.0f} messages/s = {rate:10.0f} samples/s")
    print(f"ratio edgebus / mosquitto_sub: {rate / (sub_rate * args.samples):.2f}")
    if size is not None:
        print(f"store on disk: {size / 1e6:.1f} MB = {size / total:.1f} bytes/sample "
              f"(wire: {stream_bytes / total:.1f} bytes/sample)")
    print(f"exactly once: received {received} of {total}, missing {missing}, "
          f"duplicates {stats.duplicates}, dead letters {sum(stats.dead_letters.values())}")
    ok_rate = rate >= 100_000
    ok_ratio = rate >= 0.5 * sub_rate * args.samples
    ok_loss = received == total and missing == 0
    print(f"{'PASS' if ok_rate else 'MISS'}  {rate:.0f} samples/s (target >= 100,000)")
    print(f"{'PASS' if ok_ratio else 'MISS'}  ratio {rate / (sub_rate * args.samples):.2f} (target >= 0.5)")
    print(f"{'PASS' if ok_loss else 'MISS'}  zero loss at QoS 1")
    record("ingest samples/s", rate, "samples/s", baseline="mosquitto_sub",
           baseline_value=sub_rate * args.samples, target=">= 100,000 and >= 0.5 x mosquitto_sub",
           ok=ok_rate and ok_ratio)
    record("ingest samples missing or duplicated", missing + stats.duplicates, "samples",
           target="0 at QoS 1", ok=ok_loss)


if __name__ == "__main__":
    main()
