"""Chaos: is every sample an agent accepted stored exactly once, whatever dies? (issue 17)

    python bench/chaos.py [--agents 4] [--seed 1] [--baseline] [--json out.json]

Runs Mosquitto with the configuration ``edge-broker mosquitto-config``
generates (per-device users and ACL, persistence saved every 60 s), one
``edge-coordinator start`` process (SQLite store) and ``--agents`` real
``edge-agent run`` processes publishing their CPU and memory metrics every
0.2 s, and meanwhile, at seeded random moments 1.5-3.5 s apart:

* Mosquitto killed with -9 five times and stopped gracefully twice, each time
  started again on the same port;
* agents killed with -9 sixteen times and the coordinator eight times, each
  started again;
* one agent stopped with SIGSTOP for 1.5 x its keepalive + 3 s (the broker
  drops it and publishes its will), then continued.

Then every agent is stopped gracefully (it waits until the coordinator confirmed
everything it holds) and the coordinator too, and the bench compares what the
agents accepted (the sequence numbers each agent's outbox handed out) with the
samples in the store:

``sent``            samples the agents accepted (sequenced into their outboxes);
``stored``          distinct accepted samples in the store;
``duplicated``      stored rows beyond the first of the same device, epoch and sequence number;
``lost-counted``    accepted samples not stored that the coordinator's accounting reports missing;
``lost-uncounted``  accepted samples not stored that nobody reports;
``still queued``    accepted samples not stored but still held in an agent's outbox (not lost; a MISS too).

Every restart waits until the restarted process is connected again (its log
says so) before the next event, so a slow start on a loaded machine does not
turn the schedule into one long outage.

Targets: 0 lost-uncounted and 0 duplicated (PASS/MISS). ``--baseline`` runs the
same schedule first with the end-to-end acknowledgement off (agents
``end_to_end_ack = "off"``, coordinator ``stored_acks = false``: the broker's
PUBACK alone, as before issue 17) and prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results import record  # noqa: E402
from broker.credentials import Credentials, generate_password  # noqa: E402
from broker.mosquitto_config import MosquittoSite  # noqa: E402
from coordinator.store.base import open_store  # noqa: E402
from coordinator.store.blocks import decode_block  # noqa: E402
from coordinator.store.plugins.sql import DEFAULT_DB_NAME  # noqa: E402
from schemas.sequence import DeviceSequence  # noqa: E402

KEEPALIVE = 5
MOSQUITTO_KILLS = 5
MOSQUITTO_RESTARTS = 2
AGENT_KILLS = 16
COORDINATOR_KILLS = 8
STOP_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class Result:
    """What one run found (see the module docstring)."""

    mode: str
    agents: int
    sent: int = 0
    stored: int = 0
    duplicated: int = 0
    lost_counted: int = 0
    lost_uncounted: int = 0
    still_queued: int = 0
    mosquitto_kills: int = 0
    mosquitto_restarts: int = 0
    agent_kills: int = 0
    coordinator_kills: int = 0
    sigstops: int = 0
    seconds: float = 0.0
    per_device: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """The issue's target: nothing lost without being counted, nothing stored twice."""
        return self.lost_uncounted == 0 and self.duplicated == 0 and self.still_queued == 0

    @property
    def exactly_once(self) -> bool:
        """Stronger: every accepted sample is in the store, once."""
        return self.stored == self.sent and self.duplicated == 0


class Process:
    """One child process that can be killed and started again."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env, cwd=self.log.parent)

    def log_count(self, text: str) -> int:
        try:
            return self.log.read_text(errors="replace").count(text)
        except OSError:
            return 0

    def restart_and_wait(self, pause: float, text: str = "connected to", timeout: float = 120.0) -> bool:
        """kill -9, start again after ``pause`` s, and wait until its log says ``text`` once more."""
        before = self.log_count(text)
        self.kill()
        time.sleep(pause)
        self.start()
        return self.wait_log(text, before + 1, timeout)

    def wait_log(self, text: str, count: int, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_count(text) >= count:
                return True
            time.sleep(0.2)
        return False

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class Fleet:
    """Mosquitto, the coordinator and the agents of one run, in ``workdir``."""

    def __init__(self, workdir: Path, agents: int, *, acks: bool) -> None:
        self.workdir = workdir
        self.port = free_port()
        admin = Credentials("coordinator", generate_password())
        self.devices = [Credentials(f"chaos-{i}", generate_password()) for i in range(agents)]
        site = MosquittoSite(listener_host="127.0.0.1", port=self.port, data_dir=workdir / "mq-data",
                             devices=self.devices, coordinators=[admin],
                             run_as_user="root" if os.geteuid() == 0 else None)
        files = site.write(workdir / "mq")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.mosquitto = Process("mosquitto", [binary, "-c", str(files.conf)],
                                 workdir / "mq" / "mosquitto.log")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.coordinator_dir = workdir / "coordinator"
        self.coordinator_dir.mkdir()
        conf = self.coordinator_dir / "coordinator.toml"
        conf.write_text(f"""
data_dir = "{self.coordinator_dir / 'data'}"
embedded_broker = false
stored_acks = {str(acks).lower()}
[broker]
host = "127.0.0.1"
port = {self.port}
username = "{admin.username}"
password = "{admin.password}"
client_id = "coordinator-chaos"
reconnect_min_delay = 0.05
reconnect_max_delay = 0.5
[http]
enabled = false
""")
        self.coordinator = Process("coordinator", [
            sys.executable, "-c", "from coordinator.cli import main; raise SystemExit(main())",
            "start", "--config", str(conf), "--no-http"], self.coordinator_dir / "coordinator.log", env)
        self.agents: list[Process] = []
        self.outboxes: dict[str, Path] = {}
        for cred in self.devices:
            home = workdir / cred.username
            home.mkdir()
            self.outboxes[cred.username] = home / "data" / "outbox.sqlite"
            (home / "agent.toml").write_text(f"""
[device]
id = "{cred.username}"
data_dir = "{home / 'data'}"
[broker]
host = "127.0.0.1"
port = {self.port}
username = "{cred.username}"
password = "{cred.password}"
keepalive = {KEEPALIVE}
reconnect_min_delay = 0.05
reconnect_max_delay = 0.5
ack_timeout = 5.0
end_to_end_ack = "{'required' if acks else 'off'}"
[metrics]
interval = 0.2
batch_interval = 1.0
collectors = ["cpu", "memory"]
[home_assistant]
enabled = false
[shedding]
enabled = false
""")
            self.agents.append(Process(cred.username, [
                sys.executable, "-m", "agents.cli", "run", "--config", str(home / "agent.toml"),
                "--stop-timeout", str(STOP_TIMEOUT)], home / "agent.log", env))

    def start(self) -> None:
        self.mosquitto.start()
        if not wait_port(self.port):
            raise SystemExit(f"mosquitto did not start; see {self.mosquitto.log}")
        self.coordinator.start()
        for agent in self.agents:
            agent.start()

    def restart_mosquitto(self, sig: signal.Signals, pause: float) -> None:
        if sig == signal.SIGKILL:
            self.mosquitto.kill()
        else:
            self.mosquitto.stop(30)
        time.sleep(pause)
        self.mosquitto.start()
        if not wait_port(self.port):
            raise SystemExit(f"mosquitto did not start again; see {self.mosquitto.log}")


def chaos(fleet: Fleet, rng: random.Random, result: Result, log: Callable[[str], None]) -> None:
    """The seeded schedule of kills, restarts and one SIGSTOP (see the module docstring)."""
    events = (["mq-kill"] * MOSQUITTO_KILLS + ["mq-restart"] * MOSQUITTO_RESTARTS
              + ["agent"] * AGENT_KILLS + ["coordinator"] * COORDINATOR_KILLS + ["sigstop"])
    rng.shuffle(events)
    stopped: set[int] = set()
    timers: list[threading.Timer] = []

    def resume(i: int) -> None:
        fleet.agents[i].signal(signal.SIGCONT)
        stopped.discard(i)

    time.sleep(3.0)  # everyone connected and publishing
    for n, event in enumerate(events, 1):
        time.sleep(rng.uniform(1.5, 3.5))
        pause = rng.uniform(0.1, 1.5)
        if event == "mq-kill":
            fleet.restart_mosquitto(signal.SIGKILL, pause)
            result.mosquitto_kills += 1
        elif event == "mq-restart":
            fleet.restart_mosquitto(signal.SIGTERM, pause)
            result.mosquitto_restarts += 1
        elif event == "coordinator":  # back and connected before the next event, however slow the start
            if not fleet.coordinator.restart_and_wait(pause):
                log("  the coordinator did not connect again within 120 s")
            result.coordinator_kills += 1
        elif event == "agent":
            i = rng.choice([i for i in range(len(fleet.agents)) if i not in stopped])
            if not fleet.agents[i].restart_and_wait(pause):
                log(f"  agent {fleet.agents[i].name} did not connect again within 120 s")
            result.agent_kills += 1
        else:
            i = rng.randrange(len(fleet.agents))
            fleet.agents[i].signal(signal.SIGSTOP)
            stopped.add(i)
            timer = threading.Timer(KEEPALIVE * 1.5 + 3, resume, (i,))
            timer.start()
            timers.append(timer)
            result.sigstops += 1
        log(f"  [{n:2d}/{len(events)}] {event}")
    for timer in timers:
        timer.join()


def wait_quiet(db: Path, quiet: float = 8.0, timeout: float = 180.0) -> None:
    """Until the store's sample blocks did not change for ``quiet`` seconds (at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    last: object = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                now = conn.execute("SELECT COUNT(*), MAX(rowid) FROM metric_blocks").fetchone()
        except sqlite3.Error:
            now = None
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.5)


def measure(fleet: Fleet, result: Result) -> None:
    """Compare the agents' outboxes with the store (everything stopped)."""
    data = fleet.coordinator_dir / "data"
    store = open_store({}, data_dir=data)
    try:
        states = store.load_sequence_state()
    finally:
        store.close()
    with sqlite3.connect(data / DEFAULT_DB_NAME) as conn:
        for cred in fleet.devices:
            device = cred.username
            with sqlite3.connect(fleet.outboxes[device]) as box:
                meta = dict(box.execute("SELECT key, value FROM meta").fetchall())
                queued = {first + i for first, n in box.execute(
                    "SELECT first_seq, seq_count FROM outbox WHERE stream = 'metrics'") for i in range(n)}
            epoch, accepted = int(meta["epoch"]), int(meta.get("next_seq", 0))
            rows = conn.execute("SELECT epoch, first_seq, body FROM metric_blocks WHERE device = ?",
                                (device,)).fetchall()
            seqs = [seq for e, first, body in rows if e == epoch
                    for seq, *_ in decode_block(device, e, first, body).samples()]
            distinct = set(seqs)
            lost = set(range(accepted)) - distinct - queued
            state = states.get(device)
            counted = _gaps(state) if state is not None and state.epoch == epoch else set()
            entry = {"sent": accepted, "stored": len(distinct & set(range(accepted))),
                     "duplicated": len(seqs) - len(distinct), "lost_counted": len(lost & counted),
                     "lost_uncounted": len(lost - counted), "still_queued": len(queued - distinct)}
            result.per_device[device] = entry
            for key, value in entry.items():
                setattr(result, key, getattr(result, key) + value)


def _gaps(state: DeviceSequence) -> set[int]:
    """Sequence numbers below the highest seen that the coordinator's accounting reports missing."""
    seen = {s for lo, hi in state.ranges for s in range(lo, hi)}
    return set(range(state.highest + 1)) - seen


def run(agents: int, seed: int, *, acks: bool, log: Callable[[str], None] = print) -> Result:
    result = Result(mode="stored acks" if acks else "broker PUBACK only (baseline)", agents=agents)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgebus-chaos-") as tmp:
        fleet = Fleet(Path(tmp), agents, acks=acks)
        try:
            fleet.start()
            chaos(fleet, random.Random(seed), result, log)
            time.sleep(3.0)
            log("  stopping the agents (each waits until what it holds is confirmed)")
            for agent in fleet.agents:
                agent.signal(signal.SIGTERM)
            for agent in fleet.agents:
                agent.stop(STOP_TIMEOUT + 30)
            log("  waiting until the coordinator stores nothing more")
            wait_quiet(fleet.coordinator_dir / "data" / DEFAULT_DB_NAME)
            fleet.coordinator.stop(60)
            measure(fleet, result)
        finally:
            for agent in fleet.agents:
                agent.kill()
            fleet.coordinator.kill()
            fleet.mosquitto.stop(15)
            if os.environ.get("EDGEBUS_CHAOS_KEEP"):
                shutil.copytree(tmp, os.environ["EDGEBUS_CHAOS_KEEP"], dirs_exist_ok=True)
    result.seconds = time.monotonic() - started
    return result


def report(result: Result) -> None:
    verdict = "PASS" if result.passed else "MISS"
    print(f"chaos, {result.mode}: {result.agents} agents, {result.seconds:.0f} s; Mosquitto killed -9 "
          f"{result.mosquitto_kills}x and restarted {result.mosquitto_restarts}x, agents killed -9 "
          f"{result.agent_kills}x, coordinator killed -9 {result.coordinator_kills}x, "
          f"SIGSTOP past keepalive {result.sigstops}x")
    print(f"  samples sent {result.sent}, stored {result.stored}, duplicated {result.duplicated}, "
          f"lost-and-counted {result.lost_counted}, lost-uncounted {result.lost_uncounted}, "
          f"still queued {result.still_queued}")
    print(f"  target 0 lost-uncounted, 0 duplicated: {verdict}; every accepted sample stored exactly "
          f"once: {'yes' if result.exactly_once else 'no'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=4, help="agent processes (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the chaos schedule (default 1)")
    parser.add_argument("--baseline", action="store_true",
                        help="run the schedule first with the end-to-end acknowledgement off, for comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quiet", action="store_true", help="do not print each chaos event")
    args = parser.parse_args()
    log: Callable[[str], None] = (lambda _: None) if args.quiet else (lambda s: print(s, flush=True))
    results = []
    if args.baseline:
        base = run(args.agents, args.seed, acks=False, log=log)
        report(base)
        results.append(base)
    main_result = run(args.agents, args.seed, acks=True, log=log)
    report(main_result)
    results.append(main_result)
    base = results[0] if args.baseline else None
    record(f"chaos ({main_result.mode}): lost-uncounted + duplicated",
           main_result.lost_uncounted + main_result.duplicated, "samples",
           baseline="" if base is None else base.mode,
           baseline_value=None if base is None else base.lost_uncounted + base.duplicated,
           target="0 lost-uncounted, 0 duplicated", ok=main_result.passed)
    if args.json is not None:
        args.json.write_text(json.dumps([{**asdict(r), "passed": r.passed, "exactly_once": r.exactly_once}
                                         for r in results], indent=1))
    return 0 if main_result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
