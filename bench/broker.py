"""Broker benchmark: the embedded broker (and any candidate) beside Mosquitto, in one run.

Measures, for each broker, with credentials as edgebus runs it:

* **connect**: one client after another opens TCP, logs in, gets its CONNACK
  and disconnects; milliseconds per connect (p50) and connects per second;
* **QoS 0 / QoS 1 throughput**: one publisher process to one subscriber
  process, 200-byte payloads, rate seen by the subscriber;
* **QoS 1 latency** at a paced 1,000 messages/s: p50 and p99, publish call
  to delivery, both clocks CLOCK_MONOTONIC.

and prints each figure, its ratio to Mosquitto's, and PASS/MISS against the
targets of issue 20 (throughput at least 0.5 of Mosquitto's, p99 under
10 ms, connect under 2 ms). The clients are raw sockets in processes of their
own, so the figures are the broker's, not a Python client library's::

    PATH=$PATH:/usr/sbin python bench/broker.py
    python bench/broker.py --broker embedded --broker iotcore=/work/venv-iotcore/bin/python

Mosquitto runs with the generated site configuration (password file, ACL,
persistence); the embedded broker in this process as ``broker.embedded``
starts it; candidates as :mod:`tests.conformance.candidates` starts them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results import record, verdict  # noqa: E402
from tests.brokers import EmbeddedUnderTest, MosquittoUnderTest, RunningBroker  # noqa: E402
from tests.conformance.candidates import CANDIDATE_KINDS  # noqa: E402
from tests.conformance.raw_client import PUBLISH, SUBSCRIBE, connect_packet, encode_packet  # noqa: E402

PAYLOAD_BYTES = 200
THROUGHPUT_MESSAGES = 20_000
LATENCY_RATE = 1_000
LATENCY_SECONDS = 5.0
CONNECTS = 200
WINDOW = 100  # QoS 1 messages the publisher keeps in flight
TOPIC = "edgebus/bench/broker"

THROUGHPUT_RATIO_TARGET = 0.5
P99_TARGET_MS = 10.0
CONNECT_TARGET_MS = 2.0


# -- the wire, as fast as Python sockets go ------------------------------------------


def _publish(topic: bytes, payload: bytes, qos: int, packet_id: int) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", packet_id)
    body += payload
    return encode_packet(PUBLISH, qos << 1, body)


class Wire:
    """A connected MQTT 3.1.1 socket with a packet reader that never copies more than once."""

    def __init__(self, host: str, port: int, client_id: str, username: str,
                 password: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(connect_packet(client_id, username=username, password=password))
        kind, body = self.read()
        if kind >> 4 != 2 or body[1] != 0:
            raise SystemExit(f"{client_id}: connect refused ({kind}, {bytes(body)!r})")

    def packets(self) -> list[tuple[int, bytes]]:
        """Every complete packet now buffered (reads once if there is none)."""
        while True:
            found = self._parse_all()
            if found:
                return found
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("the broker closed the connection")
            self.buf += chunk

    def read(self) -> tuple[int, bytes]:
        while True:
            found = self._parse_all(limit=1)
            if found:
                return found[0]
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("the broker closed the connection")
            self.buf += chunk

    def _parse_all(self, limit: int = 1 << 30) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        buf, at, end = self.buf, 0, len(self.buf)
        while len(out) < limit and end - at >= 2:
            length, shift, pos = 0, 0, at + 1
            while pos < end:
                byte = buf[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break
            if pos + length > end:
                break
            out.append((buf[at], bytes(buf[pos:pos + length])))
            at = pos + length
        del buf[:at]
        return out

    def subscribe(self, topic: str, qos: int) -> None:
        raw = topic.encode()
        body = struct.pack("!HH", 1, len(raw)) + raw + bytes([qos])
        self.sock.sendall(encode_packet(SUBSCRIBE, 2, body))
        while self.read()[0] >> 4 != 9:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()


# -- workers (each a process of its own) -----------------------------------------------


def _topic_of(body: bytes) -> bytes:
    (length,) = struct.unpack_from("!H", body)
    return body[2:2 + length]


def worker_subscribe(args: argparse.Namespace) -> dict[str, object]:
    """Receive ``count`` messages (or stop at ``end`` / the idle timeout) and report."""
    wire = Wire(args.host, args.port, f"bench-sub-{os.getpid()}", args.username, args.password)
    wire.subscribe(TOPIC, args.qos)
    print("ready", flush=True)
    received, first, last = 0, 0.0, 0.0
    latencies: list[int] = []
    wire.sock.settimeout(args.idle)
    try:
        while received < args.count:
            acks = bytearray()
            for kind, body in wire.packets():
                if kind >> 4 != 3:
                    continue
                now = time.monotonic_ns()
                qos = (kind >> 1) & 3
                tlen = struct.unpack_from("!H", body)[0]
                at = 2 + tlen
                if qos:
                    acks += b"\x40\x02" + body[at:at + 2]
                    at += 2
                if args.latency:
                    latencies.append(now - struct.unpack_from("!q", body, at)[0])
                received += 1
                if received == 1:
                    first = now / 1e9
                last = now / 1e9
            if acks:
                wire.sock.sendall(acks)
    except TimeoutError:
        pass
    wire.close()
    result: dict[str, object] = {"received": received,
                                 "rate": (received - 1) / (last - first) if last > first else 0.0}
    if latencies:
        ordered = sorted(latencies)
        result["p50_ms"] = ordered[len(ordered) // 2] / 1e6
        result["p99_ms"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6
    return result


def worker_publish(args: argparse.Namespace) -> dict[str, object]:
    """Publish ``count`` messages, flat out (QoS 0: in bursts; QoS 1: a window of acks) or paced."""
    wire = Wire(args.host, args.port, f"bench-pub-{os.getpid()}", args.username, args.password)
    topic, filler = TOPIC.encode(), b"x" * (PAYLOAD_BYTES - 8)
    started = time.monotonic()
    if args.rate:
        interval = 1.0 / args.rate
        in_flight = 0
        for n in range(args.count):
            due = started + n * interval
            while (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
            payload = struct.pack("!q", time.monotonic_ns()) + filler
            wire.sock.sendall(_publish(topic, payload, args.qos, n % 65535 + 1))
            in_flight += 1 if args.qos else 0
            wire.sock.setblocking(False)
            try:
                in_flight -= sum(1 for k, _ in wire.packets() if k >> 4 == 4)
            except BlockingIOError:
                pass
            finally:
                wire.sock.setblocking(True)
        # A message counts as accepted once acknowledged: wait for every PUBACK.
        while in_flight > 0:
            in_flight -= sum(1 for k, _ in wire.packets() if k >> 4 == 4)
    elif args.qos == 0:
        batch = b"".join(_publish(topic, struct.pack("!q", 0) + filler, 0, 0) for _ in range(100))
        for _ in range(args.count // 100):
            wire.sock.sendall(batch)
    else:
        sent = acked = 0
        while acked < args.count:
            burst = bytearray()
            while sent < args.count and sent - acked < WINDOW:
                sent += 1
                burst += _publish(topic, struct.pack("!q", 0) + filler, 1, sent % 65535 + 1)
            if burst:
                wire.sock.sendall(burst)
            acked += sum(1 for k, _ in wire.packets() if k >> 4 == 4)
    elapsed = time.monotonic() - started
    wire.close()
    return {"sent": args.count, "seconds": elapsed}


def worker_connect(args: argparse.Namespace) -> dict[str, object]:
    """Connect-login-disconnect ``count`` times, one after another."""
    times = []
    for n in range(args.count):
        t0 = time.perf_counter()
        wire = Wire(args.host, args.port, f"bench-conn-{os.getpid()}-{n}", args.username,
                    args.password)
        times.append(time.perf_counter() - t0)
        wire.close()
    return {"p50_ms": statistics.median(times) * 1e3,
            "per_second": len(times) / sum(times)}


WORKERS = {"subscribe": worker_subscribe, "publish": worker_publish, "connect": worker_connect}


# -- orchestration ------------------------------------------------------------------------


@dataclass
class Figures:
    broker: str
    connect_ms: float = float("nan")
    connects_per_s: float = float("nan")
    qos0_per_s: float = float("nan")
    qos1_per_s: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    lost_qos0: int = 0
    lost_qos1: int = 0


def _worker(broker: RunningBroker, role: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--worker", role, "--host", broker.host,
           "--port", str(broker.port), "--username", broker.username,
           "--password", broker.password, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, float]:
    out, _ = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"bench worker failed ({proc.returncode}): {out[-500:]}")
    return dict(json.loads(lines[-1]))


def _flow(broker: RunningBroker, qos: int, count: int, rate: int = 0,
          latency: bool = False) -> dict[str, float]:
    flags = ["--qos", str(qos), "--count", str(count), "--idle", "10"]
    sub = _worker(broker, "subscribe", *flags, *(["--latency"] if latency else []))
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != "ready":
        raise SystemExit("the subscriber did not start")
    pub = _worker(broker, "publish", *flags, "--rate", str(rate))
    _result(pub)
    return _result(sub)


def measure(broker: RunningBroker, name: str) -> Figures:
    figures = Figures(name)
    conn = _result(_worker(broker, "connect", "--count", str(CONNECTS)))
    figures.connect_ms, figures.connects_per_s = conn["p50_ms"], conn["per_second"]
    for qos in (0, 1):
        got = _flow(broker, qos, THROUGHPUT_MESSAGES)
        setattr(figures, f"qos{qos}_per_s", got["rate"])
        setattr(figures, f"lost_qos{qos}", THROUGHPUT_MESSAGES - int(got["received"]))
    count = int(LATENCY_RATE * LATENCY_SECONDS)
    got = _flow(broker, 1, count, rate=LATENCY_RATE, latency=True)
    figures.p50_ms, figures.p99_ms = got.get("p50_ms", float("nan")), got.get("p99_ms",
                                                                              float("nan"))
    figures.lost_qos1 += count - int(got["received"])
    return figures


def _start(spec: str, workdir: Path) -> RunningBroker:
    kind, _, python = spec.partition("=")
    running: RunningBroker
    if kind == "mosquitto":
        running = MosquittoUnderTest(workdir / "mosquitto")
    elif kind == "embedded":
        running = EmbeddedUnderTest(workdir / "embedded")
    elif kind in CANDIDATE_KINDS and python:
        running = CANDIDATE_KINDS[kind](workdir / kind, python)
    else:
        raise SystemExit(f"--broker {spec!r}: expected mosquitto, embedded or one of "
                         f"{', '.join(k + '=PYTHON' for k in CANDIDATE_KINDS)}")
    running.start()
    return running


def report(results: list[Figures]) -> None:
    ref = next(f for f in results if f.broker == "mosquitto")
    print(f"{'broker':<12}{'connect ms':>11}{'conn/s':>9}{'QoS0 msg/s':>12}{'QoS1 msg/s':>12}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'lost QoS0/1':>12}")
    for f in results:
        print(f"{f.broker:<12}{f.connect_ms:>11.2f}{f.connects_per_s:>9.0f}{f.qos0_per_s:>12,.0f}"
              f"{f.qos1_per_s:>12,.0f}{f.p50_ms:>8.2f}{f.p99_ms:>8.2f}"
              f"{f'{f.lost_qos0}/{f.lost_qos1}':>12}")
    for f in results:
        if f is ref:
            continue
        r0, r1 = f.qos0_per_s / ref.qos0_per_s, f.qos1_per_s / ref.qos1_per_s
        print(f"\n{f.broker} against mosquitto:")
        print(f"  QoS 0 throughput {r0:5.2f} x  {verdict(r0 >= THROUGHPUT_RATIO_TARGET)} "
              f"(target >= {THROUGHPUT_RATIO_TARGET})")
        print(f"  QoS 1 throughput {r1:5.2f} x  {verdict(r1 >= THROUGHPUT_RATIO_TARGET)} "
              f"(target >= {THROUGHPUT_RATIO_TARGET})")
        print(f"  QoS 1 p99 {f.p99_ms:6.2f} ms ({f.p99_ms / ref.p99_ms:5.1f} x)  "
              f"{verdict(f.p99_ms < P99_TARGET_MS)} (target < {P99_TARGET_MS:g} ms)")
        print(f"  connect {f.connect_ms:6.2f} ms ({f.connect_ms / ref.connect_ms:5.1f} x)  "
              f"{verdict(f.connect_ms < CONNECT_TARGET_MS)} (target < {CONNECT_TARGET_MS:g} ms)")
        # QoS 0 may be dropped under load (at most once); QoS 1 never.
        print(f"  QoS 1 messages lost: {f.lost_qos1}  {verdict(f.lost_qos1 == 0)}"
              f"  (QoS 0 dropped: {f.lost_qos0})")
        name = f"{f.broker} broker"
        record(f"{name} QoS 0 throughput", f.qos0_per_s, "msg/s", baseline="mosquitto",
               baseline_value=ref.qos0_per_s, target=f">= {THROUGHPUT_RATIO_TARGET} x mosquitto",
               ok=r0 >= THROUGHPUT_RATIO_TARGET)
        record(f"{name} QoS 1 throughput", f.qos1_per_s, "msg/s", baseline="mosquitto",
               baseline_value=ref.qos1_per_s, target=f">= {THROUGHPUT_RATIO_TARGET} x mosquitto",
               ok=r1 >= THROUGHPUT_RATIO_TARGET)
        record(f"{name} QoS 1 p99 at {LATENCY_RATE:,} msg/s", f.p99_ms, "ms", baseline="mosquitto",
               baseline_value=ref.p99_ms, target=f"< {P99_TARGET_MS:g} ms", ok=f.p99_ms < P99_TARGET_MS)
        record(f"{name} connect", f.connect_ms, "ms", baseline="mosquitto", baseline_value=ref.connect_ms,
               target=f"< {CONNECT_TARGET_MS:g} ms", ok=f.connect_ms < CONNECT_TARGET_MS)
        record(f"{name} QoS 1 messages lost", f.lost_qos1, "messages", target="0", ok=f.lost_qos1 == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", action="append", metavar="KIND[=PYTHON]",
                        help="mosquitto, embedded or a candidate such as iotcore=PYTHON "
                             "(repeatable; default: embedded; mosquitto always runs)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    for opt in ("--host", "--username", "--password"):
        parser.add_argument(opt, help=argparse.SUPPRESS)
    for opt in ("--port", "--qos", "--count", "--rate"):
        parser.add_argument(opt, type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--latency", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)), flush=True)
        return
    specs = ["mosquitto"] + [s for s in (args.broker or ["embedded"]) if s != "mosquitto"]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        for spec in specs:
            running = _start(spec, Path(tmp))
            try:
                results.append(measure(running, spec.partition("=")[0]))
            finally:
                running.stop()
            if not args.json:
                print(f"measured {spec.partition('=')[0]}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([asdict(f) for f in results], indent=2))
    else:
        report(results)


if __name__ == "__main__":
    main()
