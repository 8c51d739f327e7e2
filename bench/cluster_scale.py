"""Ingest against the number of coordinators ([cluster]): 1, 2, 3, 4 real processes (issue 18).

For each N: a fresh PostgreSQL schema, a Mosquitto, N ``coordinator.cli start`` processes
with ``[cluster]``, and the same fleet of simulated agents publishing at a fixed offered
rate (rate-limited: every device samples every ``--interval`` s, 8 metrics a sample, end-to-end
acknowledgements required). After a warm-up the bench measures, over ``--seconds``:

- samples stored per second (``count_samples`` from the store, before and after the window);
- each coordinator process's CPU seconds (psutil, user + system) over the same window;
- loss: afterwards every agent flushes (a sample leaves its outbox only once a coordinator
  confirmed it stored) and every device's sequence numbers in the store must run 0..n-1,
  each once.

This machine has 2 cores shared by Mosquitto, PostgreSQL, the agents and the coordinators,
so N coordinators cannot run N-fold in parallel here: stored samples per second stays
at the offered rate whatever N is. The figure that means something is the CPU cost:
``capacity = stored samples / coordinator CPU seconds`` (all coordinators together), i.e.
what one fully busy core running coordinators stores per second. The ingest capacity
estimate for N coordinators is ``capacity(N) * N``, ASSUMING ONE CORE PER COORDINATOR
(not measured here). The issue-18 ratio printed is ``capacity(3) * 3 / (capacity(1) * 1)``:
it is >= 2.4 when the CPU cost per sample grows by at most 25 % from 1 to 3 coordinators.

    PYTHONPATH=. EDGEBUS_TEST_POSTGRES_URL=postgresql://... python bench/cluster_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.results import record, save_curve, verdict  # noqa: E402
from broker.session import BusSession  # noqa: E402
from coordinator.demo import SimulatedAgent  # noqa: E402
from coordinator.store.plugins.sql import SqlStore  # noqa: E402
from coordinator.store.sql_engine import normalise_url  # noqa: E402
from tests.brokers import MosquittoUnderTest  # noqa: E402
from tests.test_cluster_coordinators import GROUP, ROOT, Cluster, Shares  # noqa: E402

TARGET = 2.4
METRICS_PER_SAMPLE = 8  # coordinator.demo's metrics


@dataclass(frozen=True)
class Run:
    coordinators: int
    offered_per_s: float
    stored_per_s: float
    cpu_s: dict[str, float]  # coordinator name -> CPU seconds in the window
    window_s: float
    lost: int  # missing or repeated sequence numbers over all devices
    flushed: bool

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())

    @property
    def capacity(self) -> float:
        """Stored samples per coordinator CPU second (all coordinators together)."""
        return self.stored_per_s * self.window_s / self.total_cpu_s if self.total_cpu_s else float("nan")

    @property
    def estimate(self) -> float:
        """Ingest capacity with one core per coordinator (an assumption, not measured here)."""
        return self.capacity * self.coordinators


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def losses(store: SqlStore, devices: list[str]) -> int:
    """Sequence numbers missing or stored twice, over every device (0 when each ran 0..n-1 once)."""
    bad = 0
    for device in devices:
        seqs = sorted((s.epoch, s.seq) for s in store.iter_samples(device))
        numbers = [s for _, s in seqs]
        bad += len(numbers) - len(set(seqs))
        bad += (max(numbers) + 1 - len(set(numbers))) if numbers else 1
    return bad


def run_one(n: int, *, url: str, devices: int, interval: float, warmup: float, seconds: float,
            workdir: Path) -> Run:
    schema = f"edgebus_scale_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    broker = MosquittoUnderTest(workdir / f"mosquitto-{n}")
    broker.start()
    c = Cluster(broker, workdir / f"n{n}", url, schema)
    shares = Shares()
    watch = BusSession(c.bus("scale-watch"))
    watch.subscribe(f"{ROOT}/_sys/cluster/{GROUP}/#", shares)
    base = c.bus("unused", end_to_end_ack="required", ack_timeout=2.0)
    agents = [SimulatedAgent(f"gw-{i:03d}", base, interval=interval, seed=i) for i in range(devices)]
    ids = {a.device for a in agents}
    members = {f"c{i + 1}" for i in range(n)}
    store = None
    try:
        watch.start()
        if not (watch.wait_connected(10) and watch.wait_subscribed(10)):
            raise SystemExit("the watcher did not connect to Mosquitto")
        for name in sorted(members):
            c.start(name)
        if not shares.wait(members, set(), 60, c):
            raise SystemExit(f"the coordinators never came online:\n{c.logs()}")
        for agent in agents:
            agent.start()
        if not shares.wait(members, ids, 60, c):
            raise SystemExit(f"the coordinators never took the devices:\n{c.logs()}")
        store = SqlStore.open(url, schema=schema)
        time.sleep(warmup)  # load, not synchronisation: the measured window starts in steady state
        procs = {name: psutil.Process(p.pid) for name, p in c.procs.items()}
        cpu0 = {name: cpu(p) for name, p in procs.items()}
        count0, t0 = store.count_samples(), time.monotonic()
        time.sleep(seconds)
        count1, t1 = store.count_samples(), time.monotonic()
        cpu1 = {name: cpu(p) for name, p in procs.items()}
        for agent in agents:
            agent.stop_sampling()
        flushed = all(agent.session.flush(60) for agent in agents)
        window = t1 - t0
        return Run(n, devices * METRICS_PER_SAMPLE / interval, (count1 - count0) / window,
                   {name: cpu1[name] - cpu0[name] for name in procs}, window,
                   losses(store, sorted(ids)), flushed)
    finally:
        for agent in agents:
            agent.stop()
        watch.stop(flush_timeout=0)
        c.stop()
        broker.stop()
        if store is not None:
            store.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def show(runs: list[Run]) -> bool:
    one = runs[0]
    print(f"\noffered: {one.offered_per_s:.0f} samples/s (rate-limited); window {one.window_s:.1f} s per N")
    print(f"{'N':>2} {'stored/s':>9} {'lost':>5} {'CPU s per coordinator':<34} {'cap/CPU-s':>10} "
          f"{'est. N cores':>12} {'ratio':>6}")
    for r in runs:
        per = " ".join(f"{name}={s:.2f}" for name, s in sorted(r.cpu_s.items()))
        print(f"{r.coordinators:>2} {r.stored_per_s:>9.0f} {r.lost:>5} {per:<34} {r.capacity:>10.0f} "
              f"{r.estimate:>12.0f} {r.estimate / one.estimate:>6.2f}")
    ok_all = True
    for r in runs:
        zero = r.lost == 0 and r.flushed
        ok_all &= zero
        record(f"loss with {r.coordinators} coordinator(s)", r.lost, "samples", target="0", ok=zero)
        record(f"stored samples/s with {r.coordinators} coordinator(s) (offered {r.offered_per_s:.0f}/s)",
               r.stored_per_s, "samples/s", target=">= 95 % of offered",
               ok=r.stored_per_s >= 0.95 * r.offered_per_s,
               baseline="1 coordinator", baseline_value=one.stored_per_s)
        record(f"samples per coordinator CPU second, {r.coordinators} coordinator(s)", r.capacity,
               "samples/CPU-s", target="flat (the CPU cost per sample does not grow with N)",
               ok=r.capacity >= 0.8 * one.capacity,
               baseline="1 coordinator", baseline_value=one.capacity)
    three = next((r for r in runs if r.coordinators == 3), None)
    if three is not None:
        ratio = three.estimate / one.estimate
        ok = ratio >= TARGET and three.lost == 0 and one.lost == 0 and three.flushed
        print(f"\ningest capacity estimate, 3 coordinators / 1 (samples per coordinator CPU second x N, "
              f"one core per coordinator assumed): {three.estimate:.0f} / {one.estimate:.0f} = "
              f"{ratio:.2f}x, loss {three.lost}  {verdict(ok)} (target >= {TARGET}x, zero loss)")
        record("ingest with 3 coordinators / 1 (capacity per coordinator CPU-s x N, one core each assumed)",
               three.estimate, "samples/s", target=f">= {TARGET}x, zero loss", ok=ok,
               baseline="1 coordinator", baseline_value=one.estimate)
        ok_all &= ok
    save_curve("coordinators", {"points": [
        {"coordinators": r.coordinators, "samples_per_s": r.estimate, "stored_per_s": r.stored_per_s,
         "capacity_per_cpu_s": r.capacity, "cpu_s": r.cpu_s, "lost": r.lost} for r in runs],
        "y": "estimated ingest capacity (samples/s, one core per coordinator assumed)"})
    return ok_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (noisier)")
    parser.add_argument("--coordinators", default="1,2,3,4", help="comma-separated N to run")
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between a device's samples")
    parser.add_argument("--seconds", type=float, help="measured window per N (default 20, quick 5)")
    args = parser.parse_args(argv)
    url = os.environ.get("EDGEBUS_TEST_POSTGRES_URL")
    if not url:
        print("cluster_scale: EDGEBUS_TEST_POSTGRES_URL is not set (a PostgreSQL to write into)")
        return 2
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    warmup = 2.0 if args.quick else 5.0
    runs = []
    with tempfile.TemporaryDirectory(prefix="edgebus-scale-") as tmp:
        for n in (int(x) for x in args.coordinators.split(",")):
            r = run_one(n, url=url, devices=args.devices, interval=args.interval, warmup=warmup,
                        seconds=seconds, workdir=Path(tmp))
            print(f"N={n}: stored {r.stored_per_s:.0f}/s of {r.offered_per_s:.0f}/s offered, "
                  f"coordinator CPU {r.total_cpu_s:.2f} s in {r.window_s:.1f} s, lost {r.lost}", flush=True)
            runs.append(r)
    return 0 if show(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
