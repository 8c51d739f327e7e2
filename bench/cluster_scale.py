"""Ingest against the number of coordinators ([cluster]): 1, 2, 3, 4 real processes (issue 18).

Measured, not estimated: every coordinator process runs in its own CPU cgroup with the same
fixed budget (``--budget`` cores, default 0.05: CFS quota 5 ms per 100 ms period, and a high
CPU weight so a loaded machine still gives it that much), so the coordinators are the
bottleneck and N of them have N budgets, also on a 2-core machine. The simulated agents
offer more than N budgets can store (``--devices`` devices, each publishing ``--ticks``
samples of 8 metrics in one message every ``--interval`` s, end-to-end acknowledgements
required); what the coordinators do not take waits in the agents' outboxes and Mosquitto.

For each N: a fresh PostgreSQL schema, a Mosquitto, N ``coordinator.cli start`` processes
with ``[cluster]``. Once every member took its devices the budgets are applied; after a
warm-up the bench measures over ``--seconds``:

- samples stored per second (``count_samples`` from the store, before and after the window);
- each coordinator process's CPU seconds (psutil, user + system) and its cgroup's throttled
  periods over the same window (a coordinator at its budget is throttled in most periods);
- loss: then the budgets are lifted, every agent drains (a sample leaves its outbox only
  once a coordinator confirmed it stored) and every device's sequence numbers in the store
  must run 0..n-1, each once.

The issue-18 figure is stored samples/s with 3 coordinators over the same with 1 (target
>= 2.4x, zero loss). Needs a writable cgroup CPU controller (v1 ``/sys/fs/cgroup/cpu`` or v2
``/sys/fs/cgroup`` with ``cpu`` in ``cgroup.controllers``; root); without one the bench says
so and stops (exit 2).

    PYTHONPATH=. EDGEBUS_TEST_POSTGRES_URL=postgresql://... python bench/cluster_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.results import record, save_curve, verdict  # noqa: E402
from broker.session import BusConfig, BusSession  # noqa: E402
from coordinator.demo import SimulatedAgent  # noqa: E402
from coordinator.store.plugins.sql import SqlStore  # noqa: E402
from coordinator.store.sql_engine import normalise_url  # noqa: E402
from tests.brokers import MosquittoUnderTest  # noqa: E402
from tests.test_cluster_coordinators import GROUP, ROOT, Cluster, Shares  # noqa: E402

TARGET = 2.4
METRICS_PER_SAMPLE = 8  # coordinator.demo's metrics
PERIOD_US = 100_000
CGROUP_PREFIX = "edgebus-bench-"


class NoCgroup(Exception):
    """No writable cgroup CPU controller here: the budgets cannot be applied."""


class CpuBudget:
    """One cgroup with a CPU quota (v1 ``cpu`` controller or v2 ``cpu.max``) for one process."""

    def __init__(self, name: str, cores: float) -> None:
        v1 = Path("/sys/fs/cgroup/cpu")
        v2 = Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.v2, root = False, v1
        elif "cpu" in _read(v2 / "cgroup.controllers").split():
            self.v2, root = True, v2
            with contextlib.suppress(OSError):  # already on, or set up by whoever owns the tree
                (root / "cgroup.subtree_control").write_text("+cpu")
        else:
            raise NoCgroup("no cgroup CPU controller (neither /sys/fs/cgroup/cpu nor cgroup v2 with cpu)")
        self.path = root / f"{CGROUP_PREFIX}{name}"
        self.quota_us = max(1000, round(cores * PERIOD_US))
        try:
            self.path.mkdir(exist_ok=True)
            if self.v2:
                (self.path / "cpu.weight").write_text("10000")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.shares").write_text("262144")
            self.limit()
        except OSError as e:
            self.remove()
            raise NoCgroup(f"cannot write cgroup {self.path} ({e}); run as root") from e

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def limit(self) -> None:
        if self.v2:
            (self.path / "cpu.max").write_text(f"{self.quota_us} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))

    def lift(self) -> None:
        """No quota any more (the drain after the window runs at full speed)."""
        if self.v2:
            (self.path / "cpu.max").write_text(f"max {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_quota_us").write_text("-1")

    def throttled(self) -> tuple[int, int]:
        """(periods, throttled periods) so far."""
        stat = dict(line.split()[:2] for line in _read(self.path / "cpu.stat").splitlines() if line.strip())
        return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))

    def remove(self) -> None:
        """Move what is left to the parent and remove the cgroup (rmdir fails while it has tasks)."""
        if not self.path.is_dir():
            return
        for pid in _read(self.path / "cgroup.procs").split():
            with contextlib.suppress(OSError):
                (self.path.parent / "cgroup.procs").write_text(pid)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"cluster_scale: could not remove cgroup {self.path}", file=sys.stderr)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class BatchingAgent(SimulatedAgent):
    """A simulated agent that publishes ``ticks`` samples in one message: cheaper per sample,
    so the agents on this machine can offer more than the coordinators' budgets take."""

    def __init__(self, device: str, base: BusConfig, *, interval: float, seed: int, ticks: int) -> None:
        super().__init__(device, base, interval=interval, seed=seed)
        self.ticks = ticks

    def start(self) -> None:
        """Connect (the birth makes the device known) but do not sample yet: see :meth:`begin`."""
        self.session.start()

    def begin(self) -> None:
        """Start sampling, once a coordinator subscribed to this device (else the first go nowhere)."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time_ns() // 1_000_000
            samples = []
            for i in range(self.ticks):
                samples += self.sample(now - (self.ticks - 1 - i))
            self.publisher.publish(samples)


@dataclass(frozen=True)
class Run:
    coordinators: int
    offered_per_s: float
    stored_per_s: float
    cpu_s: dict[str, float]  # coordinator name -> CPU seconds in the window
    throttled: dict[str, float]  # coordinator name -> share of CFS periods throttled in the window
    window_s: float
    budget: float  # cores per coordinator
    lost: int  # missing or repeated sequence numbers over all devices
    flushed: bool
    drain_s: float
    devices: dict[str, int]  # coordinator name -> devices it took

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())

    @property
    def per_cpu_s(self) -> float:
        """Stored samples per coordinator CPU second (all coordinators together)."""
        return self.stored_per_s * self.window_s / self.total_cpu_s if self.total_cpu_s else float("nan")

    @property
    def zero_loss(self) -> bool:
        return self.lost == 0 and self.flushed


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


@contextlib.contextmanager
def budgets(names: list[str], cores: float) -> Iterator[dict[str, CpuBudget]]:
    made: dict[str, CpuBudget] = {}
    try:
        for name in names:
            made[name] = CpuBudget(f"{os.getpid()}-{name}", cores)
        yield made
    finally:
        for b in made.values():
            b.remove()


def run_one(n: int, *, url: str, devices: int, interval: float, ticks: int, budget: float, warmup: float,
            seconds: float, drain: float, workdir: Path) -> Run:
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
    # ack_timeout past warm-up and window: a backlog behind a budget-limited coordinator is not
    # lost, and re-sending it in the window would spend the budgets twice (it is re-sent in the drain).
    base = c.bus("unused", end_to_end_ack="required", ack_timeout=60.0)
    agents = [BatchingAgent(f"gw-{i:03d}", base, interval=interval, seed=i, ticks=ticks)
              for i in range(devices)]
    ids = {a.device for a in agents}
    members = sorted(f"c{i + 1}" for i in range(n))
    store = None
    try:
        with budgets(members, budget) as groups:
            watch.start()
            if not (watch.wait_connected(10) and watch.wait_subscribed(10)):
                raise SystemExit("the watcher did not connect to Mosquitto")
            for name in members:
                c.start(name)
            if not shares.wait(set(members), set(), 60, c):
                raise SystemExit(f"the coordinators never came online:\n{c.logs()}")
            for agent in agents:
                agent.start()
            if not shares.wait(set(members), ids, 60, c):
                raise SystemExit(f"the coordinators never took the devices:\n{c.logs()}")
            took = {m: len(shares.of(m)) for m in members}
            for name, proc in c.procs.items():  # started at full speed; budgeted from here on
                groups[name].add(proc.pid)
            for agent in agents:
                agent.begin()
            store = SqlStore.open(url, schema=schema)
            time.sleep(warmup)  # load, not synchronisation: the backlog builds, the window is steady state
            procs = {name: psutil.Process(p.pid) for name, p in c.procs.items()}
            cpu0 = {name: cpu(p) for name, p in procs.items()}
            thr0 = {name: g.throttled() for name, g in groups.items()}
            count0, t0 = store.count_samples(), time.monotonic()
            time.sleep(seconds)
            count1, t1 = store.count_samples(), time.monotonic()
            cpu1 = {name: cpu(p) for name, p in procs.items()}
            thr1 = {name: g.throttled() for name, g in groups.items()}
            if not shares.settled(set(members), ids):
                print(f"N={n}: the shares changed during the window", flush=True)
            for agent in agents:
                agent.stop_sampling()
            for g in groups.values():
                g.lift()
            d0 = time.monotonic()
            deadline = d0 + drain
            flushed = all(agent.session.flush(max(0.1, deadline - time.monotonic())) for agent in agents)
            drain_s = time.monotonic() - d0
        window = t1 - t0
        throttled = {}
        for name in members:
            periods = thr1[name][0] - thr0[name][0]
            throttled[name] = (thr1[name][1] - thr0[name][1]) / periods if periods else 0.0
        return Run(n, devices * ticks * METRICS_PER_SAMPLE / interval, (count1 - count0) / window,
                   {name: cpu1[name] - cpu0[name] for name in procs}, throttled, window, budget,
                   losses(store, sorted(ids)), flushed, drain_s, took)
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
    print(f"\noffered: {one.offered_per_s:.0f} samples/s; budget {one.budget:.2f} core per coordinator; "
          f"window {one.window_s:.1f} s per N; load average {os.getloadavg()[0]:.1f}")
    print(f"{'N':>2} {'stored/s':>9} {'ratio':>6} {'lost':>5} {'drain s':>7} "
          f"{'CPU s per coordinator (throttled periods)':<52} {'per CPU-s':>9}  devices")
    for r in runs:
        per = " ".join(f"{name}={s:.2f}({r.throttled[name]:.0%})" for name, s in sorted(r.cpu_s.items()))
        took = ",".join(str(r.devices[m]) for m in sorted(r.devices))
        print(f"{r.coordinators:>2} {r.stored_per_s:>9.0f} {r.stored_per_s / one.stored_per_s:>6.2f} "
              f"{r.lost:>5} {r.drain_s:>7.1f} {per:<52} {r.per_cpu_s:>9.0f}  {took}")
    for r in runs:
        if r.stored_per_s >= 0.85 * r.offered_per_s:
            print(f"N={r.coordinators}: stored is within 15 % of the offered rate: the agents, not the "
                  "budgets, may be the limit (offer more: --ticks, --devices, or a smaller --budget)")
    ok_all = True
    for r in runs:
        ok_all &= r.zero_loss
        record(f"loss with {r.coordinators} coordinator(s)", r.lost, "samples", target="0", ok=r.zero_loss)
        budget_cpu = r.budget * r.window_s
        at_budget = all(s >= 0.8 * budget_cpu for s in r.cpu_s.values())
        record(f"CPU s per coordinator in the window, {r.coordinators} coordinator(s) (lowest)",
               min(r.cpu_s.values()), "CPU-s", target=f"at the budget ({budget_cpu:.2f} s): the coordinators "
               "are the bottleneck", ok=at_budget)
        ok_all &= at_budget
        if r.coordinators != 1:
            record(f"stored samples/s with {r.coordinators} coordinators / 1 ({r.budget:.2f} core each)",
                   r.stored_per_s, "samples/s", target=f">= {0.8 * r.coordinators:.1f}x",
                   ok=r.stored_per_s >= 0.8 * r.coordinators * one.stored_per_s,
                   baseline="1 coordinator", baseline_value=one.stored_per_s)
    three = next((r for r in runs if r.coordinators == 3), None)
    if three is not None:
        ratio = three.stored_per_s / one.stored_per_s
        ok = ratio >= TARGET and three.zero_loss and one.zero_loss
        print(f"\ningest, 3 coordinators / 1 (stored samples/s, {one.budget:.2f} core each, measured): "
              f"{three.stored_per_s:.0f} / {one.stored_per_s:.0f} = {ratio:.2f}x, loss {three.lost} and "
              f"{one.lost}  {verdict(ok)} (target >= {TARGET}x, zero loss)")
        record(f"ingest with 3 coordinators / 1 (stored samples/s, {one.budget:.2f} core each)",
               three.stored_per_s, "samples/s", target=f">= {TARGET}x, zero loss", ok=ok,
               baseline="1 coordinator", baseline_value=one.stored_per_s)
        ok_all &= ok
    save_curve("coordinators", {"points": [
        {"coordinators": r.coordinators, "samples_per_s": r.stored_per_s, "cpu_s": r.cpu_s,
         "throttled": r.throttled, "per_cpu_s": r.per_cpu_s, "lost": r.lost} for r in runs],
        "y": f"stored samples/s ({one.budget:.2f} core per coordinator, measured)"})
    return ok_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (noisier)")
    parser.add_argument("--coordinators", default="1,2,3,4", help="comma-separated N to run")
    parser.add_argument("--budget", type=float, default=0.05, help="cores per coordinator (CFS quota)")
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between a device's messages")
    parser.add_argument("--ticks", type=int, default=16, help="samples (of 8 metrics) per message")
    parser.add_argument("--seconds", type=float, help="measured window per N (default 20, quick 8)")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds the agents may take to drain")
    args = parser.parse_args(argv)
    url = os.environ.get("EDGEBUS_TEST_POSTGRES_URL")
    if not url:
        print("cluster_scale: EDGEBUS_TEST_POSTGRES_URL is not set (a PostgreSQL to write into)")
        return 2
    try:
        CpuBudget(f"{os.getpid()}-probe", args.budget).remove()
    except NoCgroup as e:
        print(f"cluster_scale: {e}: the coordinators cannot be given a CPU budget each, so N of them "
              "cannot be measured against 1 on this machine; not run")
        return 2
    # A SIGTERM (bench/report.py's timeout, an operator) unwinds like an error: the finally blocks
    # stop the coordinators and remove the cgroups.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    warmup = 4.0 if args.quick else 6.0
    runs = []
    with tempfile.TemporaryDirectory(prefix="edgebus-scale-") as tmp:
        for n in (int(x) for x in args.coordinators.split(",")):
            r = run_one(n, url=url, devices=args.devices, interval=args.interval, ticks=args.ticks,
                        budget=args.budget, warmup=warmup, seconds=seconds, drain=args.drain,
                        workdir=Path(tmp))
            print(f"N={n}: stored {r.stored_per_s:.0f}/s of {r.offered_per_s:.0f}/s offered, "
                  f"coordinator CPU {r.total_cpu_s:.2f} s in {r.window_s:.1f} s, lost {r.lost}, "
                  f"drained in {r.drain_s:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
            runs.append(r)
    return 0 if show(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
