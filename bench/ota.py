"""What an over-the-air update costs: time and bytes for a 20 MB agent bundle, clean and interrupted.

    python bench/ota.py [--size-mb 20] [--chunk-kib 64] [--health-window 1]

Starts Mosquitto on a free port and one real agent process (``edge-agent run``
with OTA enabled) from an A/B prefix under a test service manager (the
``edgebus-slot prestart`` guard, restart on failure: tests/ota_helpers.py).
The update is a bundle with SIZE MB of random bytes (so gzip cannot flatter
it), packed, signed and rolled out by the same code as ``edge-flash ota
publish``. Two runs, each on a fresh device:

* clean: transfer time (offer -> the device holds every chunk), whole update
  time (offer -> committed: verify, extract, install, restart, health window),
  bytes the server sent vs the artifact's size;
* interrupted: the agent is killed (SIGKILL) half-way through the transfer and
  restarted by the service manager; it resumes from the chunks it holds.
  Target: chunks sent again under 5% of the artifact.

Baseline, measured in the same run on the same broker: the same bytes pushed
as CHUNK-sized QoS 1 messages by a raw paho publisher to a raw paho
subscriber, with no windowing, digests or disk. The ratio says what the
pull protocol, the digests and the agent's disk writes cost.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.mosquitto import start_mosquitto, stop  # noqa: E402
from bench.results import record  # noqa: E402
from broker.router import ReceivedMessage  # noqa: E402
from broker.session import BusConfig, BusSession  # noqa: E402
from firmware_tools.agent_config import BrokerTarget  # noqa: E402
from firmware_tools.keys import init_keys  # noqa: E402
from firmware_tools.ota.publish import publisher_session  # noqa: E402
from firmware_tools.ota.report import PublishReport  # noqa: E402
from firmware_tools.ota.rollout import OtaPublisher  # noqa: E402
from firmware_tools.ota_artifact import Artifact, build_artifact  # noqa: E402
from protocols.ota.rollout import RolloutPolicy  # noqa: E402
from schemas.birth import Birth  # noqa: E402
from schemas.messages import decode_record  # noqa: E402
from schemas.ota import OtaProgress, Phase  # noqa: E402
from tests.ota_helpers import TestSystemd, make_agent_bundle, make_prefix  # noqa: E402

TARGET_RESENT = 0.05
WAIT = 300.0


def agent_toml(home: Path, device: str, port: int, prefix: Path, keys: Path, health_window: float) -> Path:
    path = home / "agent.toml"
    path.write_text(f"""
[device]
id = "{device}"
data_dir = "{home / 'agent-data'}"

[broker]
host = "127.0.0.1"
port = {port}
reconnect_min_delay = 0.05
reconnect_max_delay = 0.5

[home_assistant]
enabled = false

[shedding]
enabled = false

[ota]
prefix = "{prefix}"
trusted_keys = "{keys / 'trusted_keys.json'}"
request_timeout = 2
health_window = {health_window}
""")
    return path


class PhaseClock:
    """When each device first reported each phase of one update (from the retained state/ota)."""

    def __init__(self, port: int, update_id: str) -> None:
        self.update_id = update_id
        self.first: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self.session = BusSession(BusConfig(port=port, client_id="bench-ota-clock", clean_start=True))
        self._ready: set[str] = set()
        self._ready_cond = threading.Condition()
        self.session.subscribe("edgebus/+/state/ota", self._on)
        self.session.subscribe("edgebus/+/birth", self._on_birth)
        self.session.start()
        self.session.wait_connected(10)

    def _on(self, msg: ReceivedMessage) -> None:
        progress = OtaProgress.from_json_bytes(msg.payload)
        if progress.update_id != self.update_id:
            return
        device = msg.topic.split("/")[1]
        with self._lock:
            self.first.setdefault((device, progress.phase.value), time.monotonic())
            if progress.total and progress.received == progress.total:
                self.first.setdefault((device, "all_chunks"), time.monotonic())

    def _on_birth(self, msg: ReceivedMessage) -> None:
        record = decode_record(msg.payload)
        if isinstance(record, Birth) and "ota" in record.capabilities:
            with self._ready_cond:
                self._ready.add(record.device)
                self._ready_cond.notify_all()

    def ready(self, device: str, timeout: float) -> bool:
        """The agent is up: its birth lists the ota capability."""
        with self._ready_cond:
            return self._ready_cond.wait_for(lambda: device in self._ready, timeout)

    def at(self, device: str, *phases: str) -> float | None:
        with self._lock:
            times = [self.first[(device, p)] for p in phases if (device, p) in self.first]
        return min(times) if times else None

    def close(self) -> None:
        self.session.stop(flush_timeout=0)


def run_update(workdir: Path, name: str, port: int, artifact: Artifact, keys: Path, health_window: float,
               kill_at: float | None) -> tuple[PublishReport, dict[str, float], TestSystemd]:
    """One device, one update; ``kill_at``: SIGKILL the agent when this share of chunks was served."""
    home = workdir / name
    home.mkdir()
    prefix = make_prefix(home / "opt")
    systemd = TestSystemd(prefix, home / "agent-data", agent_toml(home, name, port, prefix, keys,
                                                                   health_window)).start()
    clock = PhaseClock(port, artifact.manifest.update_id)
    session = publisher_session(BrokerTarget("127.0.0.1", port, False), client_id=f"bench-ota-{name}")
    killed = threading.Event()
    chunks = artifact.manifest.chunk_count

    def hook(_device: str, index: int, frame: bytes) -> bytes:
        if kill_at is not None and not killed.is_set() and index >= kill_at * chunks:
            killed.set()
            systemd.kill(signal.SIGKILL)
        return frame

    try:
        if not clock.ready(name, 30):
            raise SystemExit(f"{name} never announced the ota capability:\n{systemd.log_tail()}")
        publisher = OtaPublisher(session, artifact, RolloutPolicy(canary_fraction=1.0), timeout=60.0,
                                 out=io.StringIO(), frame_hook=hook)
        session.start()
        t0 = time.monotonic()
        report = publisher.run([name])
        t_end = time.monotonic()
        publisher.close()
        transfer = clock.at(name, "all_chunks", Phase.VERIFYING.value, Phase.INSTALLING.value)
        committed = clock.at(name, Phase.COMMITTED.value)
        times = {"transfer_s": (transfer or t_end) - t0, "update_s": (committed or t_end) - t0}
        if kill_at is not None and not killed.is_set():
            raise SystemExit("the transfer ended before the kill point: nothing was interrupted")
        return report, times, systemd
    finally:
        session.stop(flush_timeout=0)
        clock.close()
        systemd.stop()


def baseline(port: int, data: bytes, chunk: int) -> float:
    """Seconds to push ``data`` as QoS 1 messages of ``chunk`` bytes from a raw publisher to a subscriber."""
    count = -(-len(data) // chunk)
    got = threading.Event()
    received = [0]

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received[0] += 1
        if received[0] == count:
            got.set()

    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ota-raw-sub")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe("bench/raw/chunk", qos=1)
    sub.loop_start()
    subscribed.wait(10)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ota-raw-pub")
    pub.max_inflight_messages_set(64)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    t0 = time.monotonic()
    for offset in range(0, len(data), chunk):
        pub.publish("bench/raw/chunk", data[offset:offset + chunk], qos=1)
    ok = got.wait(WAIT)
    elapsed = time.monotonic() - t0
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()
    if not ok:
        raise SystemExit(f"baseline: the subscriber got {received[0]} of {count} messages")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=20.0, help="random payload in the bundle (MB)")
    parser.add_argument("--chunk-kib", type=int, default=64, help="chunk size (KiB)")
    parser.add_argument("--health-window", type=float, default=1.0, help="the new agent's probation (s)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of chunks served before the kill")
    args = parser.parse_args()
    chunk = args.chunk_kib * 1024
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        work = Path(tmp)
        broker, port = start_mosquitto(work)
        try:
            keys = work / "keys"
            init_keys(keys)
            t = time.monotonic()
            bundle = make_agent_bundle(work / "bundle", keys, padding=int(args.size_mb * 1e6))
            artifact = build_artifact(bundle, kind="agent", version="2.0", keys_dir=keys, chunk_size=chunk,
                                      health_window_s=args.health_window)
            pack_s = time.monotonic() - t
            m = artifact.manifest
            print(f"artifact: {m.size / 1e6:.1f} MB ({m.chunk_count} chunks of {chunk // 1024} KiB), "
                  f"packed and signed in {pack_s:.2f} s")
            base_s = baseline(port, os.urandom(m.size), chunk)
            print(f"baseline (raw paho QoS 1, {chunk // 1024} KiB messages): {base_s:.2f} s "
                  f"({m.size / 1e6 / base_s:.1f} MB/s)")
            results = {}
            times_by_label: dict[str, float] = {}
            for label, kill in (("clean", None), ("interrupted", args.kill_at)):
                report, times, systemd = run_update(work, f"bench-{label}", port, artifact, keys,
                                                    args.health_window, kill)
                device = f"bench-{label}"
                outcome = report.outcomes.get(device)
                sent = report.bytes_sent.get(device, 0)
                resent = report.resent_chunks.get(device, 0)
                results[label] = (outcome, sent, resent)
                transfer_s = times_by_label[label] = times["transfer_s"]
                print(f"{label}: {outcome}; transfer {transfer_s:.2f} s "
                      f"({m.size / 1e6 / transfer_s:.1f} MB/s, {transfer_s / base_s:.1f}x the "
                      f"baseline's time), whole update {times['update_s']:.2f} s; sent {sent / 1e6:.2f} MB = "
                      f"{sent / m.size:.4f}x the artifact; chunks re-sent {resent} "
                      f"({resent / m.chunk_count:.2%}); agent exits {systemd.exits}")
                if outcome != "committed":
                    print(systemd.log_tail(30))
            outcome, sent, resent = results["interrupted"]
            # Bytes sent beyond what the clean run needed (so msgpack framing is not counted as re-sent).
            share = (sent - results["clean"][1]) / m.size
            verdict = "PASS" if outcome == "committed" and share < TARGET_RESENT else "MISS"
            print(f"{verdict}: after a mid-transfer kill the server re-sent {share:.2%} of the artifact's "
                  f"bytes ({resent} distinct chunks; target under {TARGET_RESENT:.0%})")
            record("OTA re-sent after a mid-transfer kill", share * 100, "% of the artifact",
                   target=f"< {TARGET_RESENT:.0%}, committed", ok=verdict == "PASS")
            record("OTA clean transfer time", times_by_label["clean"], "s", baseline="raw paho QoS 1 push",
                   baseline_value=base_s,
                   target="committed (no time target)", ok=results["clean"][0] == "committed")
            return 0 if verdict == "PASS" else 1
        finally:
            stop(broker)


if __name__ == "__main__":
    raise SystemExit(main())
