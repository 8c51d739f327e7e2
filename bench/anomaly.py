"""Precision, recall and detection delay of the online anomaly detector on synthetic streams.

Generates seeded metric streams with realistic baselines (a daily cycle, AR(1)
noise, some quantised or heavy-tailed) and injects anomalies whose positions
are known: spikes, level shifts, slow drifts and stuck sensors. Each kind is
run on its own set of streams, so every false alert can be charged to a kind;
a clean set measures false alerts on anomaly-free data. The same samples go
through a naive baseline in the same run for context: per stream, a fixed band
of mean ± 3 sd of the first day, with the same one-alert-per-episode grouping.

An anomaly counts as detected when an alert falls inside its window (plus a
short grace); delay is in samples from its start. Precision is the share of
alerts that fall inside some window. The detector was NOT tuned on any public
benchmark; its defaults were set by reasoning and checked only on this data.
When river is installed, the ``river_holt`` detector (river's Holt forecaster,
scored by its residual) runs on the same streams as a second row.

    python bench/anomaly.py [--seed 7] [--streams 12] [--days 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.anomaly import AnomalyEngine
from coordinator.anomaly.episode import EpisodeGate

INTERVAL_MS = 300_000  # one sample every five minutes
PER_DAY = 86_400_000 // INTERVAL_MS
GRACE = 10
KINDS = ("spike", "level_shift", "drift", "stuck")


@dataclass
class Window:
    kind: str
    start: int
    end: int  # exclusive; an alert in [start, end + GRACE) detects it


@dataclass
class Stream:
    name: str
    values: np.ndarray
    windows: list[Window] = field(default_factory=list)


def baseline(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """A healthy metric: level + daily cycle + AR(1) noise; sometimes quantised or heavy-tailed."""
    mean = rng.uniform(10, 500)
    sd = mean * rng.uniform(0.01, 0.05)
    amp = sd * rng.uniform(0, 8)
    phase = rng.uniform(0, 2 * math.pi)
    t = np.arange(n)
    cycle = amp * np.sin(2 * math.pi * t / PER_DAY + phase) + 0.3 * amp * np.sin(4 * math.pi * t / PER_DAY)
    phi = rng.uniform(0, 0.6)
    shocks = rng.standard_t(5, n) / math.sqrt(5 / 3) if rng.random() < 0.3 else rng.standard_normal(n)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = phi * noise[i - 1] + shocks[i] * sd * math.sqrt(1 - phi * phi)
    values = mean + cycle + noise
    if rng.random() < 0.25:
        step = sd * 0.5
        values = np.round(values / step) * step
    return values, sd


def make_stream(rng: np.random.Generator, name: str, kind: str | None, days: int) -> Stream:
    n = days * PER_DAY
    values, sd = baseline(rng, n)
    stream = Stream(name, values)
    if kind is None:
        return stream
    start = 3 * PER_DAY + int(rng.integers(0, PER_DAY // 2))
    while start < n - PER_DAY // 2:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            length = int(rng.integers(1, 3))
            values[start:start + length] += sign * sd * rng.uniform(6, 15)
            stream.windows.append(Window(kind, start, start + length))
        elif kind == "level_shift":
            values[start:] += sign * sd * rng.uniform(5, 12)
            stream.windows.append(Window(kind, start, start + 1))
        elif kind == "drift":
            length = int(rng.integers(100, 300))
            size = sign * sd * rng.uniform(6, 12)
            ramp = np.minimum(np.arange(n - start) / length, 1.0) * size
            values[start:] += ramp
            stream.windows.append(Window(kind, start, start + length))
        else:
            length = int(rng.integers(60, 200))
            values[start:start + length] = values[start]
            stream.windows.append(Window(kind, start, start + length))
        start = stream.windows[-1].end + PER_DAY + int(rng.integers(0, PER_DAY))
    return stream


def naive_alerts(values: np.ndarray) -> list[int]:
    """Indices where a fixed band from the first day is left, one per episode."""
    first = values[:PER_DAY]
    low, high = first.mean() - 3 * first.std(), first.mean() + 3 * first.std()
    gate = EpisodeGate(close_after=10)
    return [i for i, v in enumerate(values) if gate.update(not low <= v <= high)]


@dataclass
class Tally:
    alerts: int = 0
    true_alerts: int = 0
    windows: int = 0
    detected: int = 0
    delays: list[int] = field(default_factory=list)
    samples: int = 0

    def add(self, stream: Stream, alert_indices: list[int]) -> None:
        self.samples += len(stream.values)
        self.alerts += len(alert_indices)
        inside = [any(w.start <= i < w.end + GRACE for w in stream.windows) for i in alert_indices]
        self.true_alerts += sum(inside)
        for w in stream.windows:
            self.windows += 1
            hits = [i for i in alert_indices if w.start <= i < w.end + GRACE]
            if hits:
                self.detected += 1
                self.delays.append(hits[0] - w.start)

    def row(self) -> dict[str, float | int | None]:
        return {
            "precision": self.true_alerts / self.alerts if self.alerts else None,
            "recall": self.detected / self.windows if self.windows else None,
            "delay_median": float(np.median(self.delays)) if self.delays else None,
            "delay_p90": float(np.percentile(self.delays, 90)) if self.delays else None,
            "alerts": self.alerts,
            "anomalies": self.windows,
            "false_per_10k": 1e4 * (self.alerts - self.true_alerts) / self.samples if self.samples else 0.0,
        }


def _river_available() -> bool:
    try:
        import coordinator.anomaly.plugins.river_holt  # noqa: F401  (registers type = "river_holt")
    except ImportError:
        return False
    return True


def run(seed: int, streams_per_kind: int, days: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    engines = {"detector": AnomalyEngine()}
    if _river_available():
        engines["river"] = AnomalyEngine({"detector": {"type": "river_holt"}})
    results: dict[str, dict[str, Tally]] = {name: {} for name in (*engines, "naive")}
    scored = dict.fromkeys(engines, 0)
    elapsed = dict.fromkeys(engines, 0.0)
    for kind in (*KINDS, None):
        label = kind or "clean"
        tallies = {name: Tally() for name in results}
        for s in range(streams_per_kind):
            stream = make_stream(rng, f"{label}-{s}", kind, days)
            samples = [(stream.name, "m", i * INTERVAL_MS, float(v)) for i, v in enumerate(stream.values)]
            for name, engine in engines.items():
                began = time.perf_counter()
                alerts = engine.observe_many(samples)
                elapsed[name] += time.perf_counter() - began
                scored[name] += len(samples)
                tallies[name].add(stream, [a.time_ms // INTERVAL_MS for a in alerts])
            tallies["naive"].add(stream, naive_alerts(stream.values))
        for name, tally in tallies.items():
            results[name][label] = tally
    table: dict[str, object] = {}
    for name, by_kind in results.items():
        overall = Tally()
        for tally in by_kind.values():
            overall.alerts += tally.alerts
            overall.true_alerts += tally.true_alerts
            overall.windows += tally.windows
            overall.detected += tally.detected
            overall.delays += tally.delays
            overall.samples += tally.samples
        table[name] = {**{k: t.row() for k, t in by_kind.items()}, "overall": overall.row()}
    table["samples_per_s"] = {name: scored[name] / elapsed[name] for name in engines}
    table["samples"] = scored["detector"]
    return table


def _cell(x: float | int | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--streams", type=int, default=12, help="streams per anomaly kind (and clean)")
    parser.add_argument("--days", type=int, default=10, help=f"days per stream ({PER_DAY} samples a day)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    table = run(args.seed, args.streams, args.days)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"seed {args.seed}: {args.streams} streams per kind x {args.days} days, "
          f"{table['samples']} samples")
    header = f"{'':9}{'kind':12}{'precision':>10}{'recall':>8}{'delay p50':>10}{'delay p90':>10}" \
             f"{'alerts':>8}{'anomalies':>10}{'false/10k':>10}"
    print(header)
    names = [name for name in ("detector", "river", "naive") if name in table]
    for name in names:
        rows = table[name]
        assert isinstance(rows, dict)
        for kind, row in rows.items():
            print(f"{name:9}{kind:12}{_cell(row['precision'], '.3f'):>10}{_cell(row['recall'], '.3f'):>8}"
                  f"{_cell(row['delay_median'], '.1f'):>10}{_cell(row['delay_p90'], '.1f'):>10}"
                  f"{row['alerts']:>8}{row['anomalies']:>10}{row['false_per_10k']:>10.2f}")
    rates = table["samples_per_s"]
    assert isinstance(rates, dict)
    for name, rate in rates.items():
        print(f"{name} scored {rate:,.0f} samples/s (one process, observe_many)")
    if "river" not in table:
        print("river: not installed (pip install 'edgebus[river]') - its row is left out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
