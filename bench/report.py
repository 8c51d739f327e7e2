"""Run every benchmark in bench/ and write one markdown report with the machine it ran on, and plots.

    python bench/report.py [--quick] [--out bench/REPORT.md] [--only codec,ingest] [--timeout 900]

Each bench runs as a subprocess with a timeout. It hands its figures over as
bench/results.py records (figure, baseline measured in the same run, ratio,
target, PASS/MISS) and its curves as JSON files; a bench that fails, times
out or records nothing gets a row saying so, never a silent gap. A bench
file in bench/ that this module does not know runs with no arguments.

The header states the machine: CPU model, cores, RAM, the load average at the
start and the end, the git commit and the date. On a loaded machine (a load
average above half the cores) the report says so: its figures are then
lower bounds for speed and upper bounds for latency.

Plots (PNG beside the report): end-to-end latency percentiles against offered
load (bench/ingest.py --latency), and ingest throughput against the number
of coordinators when a bench measured that curve (``coordinators``); without
one the report says it was not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from bench.results import CURVES_ENV, RECORDS_ENV  # noqa: E402

#: Helper modules and benches another bench runs (balance runs balance_fleet; agent runs camera_pipeline).
NOT_BENCHES = {"report", "results", "mosquitto", "balance_fleet", "camera_pipeline", "__init__"}


@dataclass(frozen=True)
class Spec:
    """How to run one bench: its file, the arguments of a full and of a quick run."""

    name: str
    script: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()


#: In the order they run; the fast and self-contained ones first.
SPECS = (
    Spec("codec", "codec.py"),
    Spec("detect", "detect.py", (), ("--repeat", "10")),
    Spec("anomaly", "anomaly.py", (), ("--quick",)),
    Spec("balance", "balance.py"),
    Spec("agent", "agent.py", (), ("--seconds", "5")),
    Spec("ingest", "ingest.py", (), ("--batches", "60")),
    Spec("ingest-latency", "ingest.py", ("--latency", "250,500,1000,2000"),
         ("--latency", "250,1000,2000", "--latency-seconds", "2")),
    Spec("broker", "broker.py"),
    Spec("coordination", "coordination.py", (), ("--samples", "100")),
    Spec("twopc", "twopc.py", (), ("--quick",)),
    Spec("bft", "bft.py", (), ("--seconds", "1", "--samples", "50")),
    Spec("ota", "ota.py"),  # a smaller artifact would make the re-sent share (the target) larger
    Spec("api", "api.py", (), ("--clients", "20", "--queries", "10", "--seconds", "5", "--batches", "30")),
    Spec("cluster_scale", "cluster_scale.py", (), ("--quick",)),
    Spec("chaos", "chaos.py", ("--baseline", "--quiet"), ("--quiet", "--agents", "2")),
)


def all_specs() -> list[Spec]:
    """SPECS, then any other bench file in bench/ (run with no arguments)."""
    known = {s.script for s in SPECS}
    extra = [Spec(p.stem, p.name) for p in sorted(BENCH.glob("*.py"))
             if p.name not in known and p.stem not in NOT_BENCHES]
    return [*SPECS, *extra]


@dataclass
class Outcome:
    """One bench run: its records, and how it ended."""

    spec: Spec
    seconds: float = 0.0
    exit_code: int | None = None
    timed_out: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)
    last_lines: list[str] = field(default_factory=list)
    load: float = 0.0

    @property
    def failure(self) -> str | None:
        """Why this bench has no verdicts of its own (None when it recorded figures)."""
        if self.timed_out:
            return f"TIMEOUT after {self.seconds:.0f} s"
        if self.records:
            return None
        if self.exit_code:
            tail = self.last_lines[-1] if self.last_lines else ""
            return f"FAILED (exit {self.exit_code}): {tail}"
        return "NO FIGURES (the bench recorded none)"


def run_bench(spec: Spec, quick: bool, timeout: float, env: dict[str, str]) -> Outcome:
    out = Outcome(spec, load=os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        records, curves = Path(tmp) / "records.jsonl", Path(tmp) / "curves"
        curves.mkdir()
        run_env = {**env, RECORDS_ENV: str(records), CURVES_ENV: str(curves)}
        args = [sys.executable, str(BENCH / spec.script), *(spec.quick if quick else spec.full)]
        started = time.monotonic()
        # A session of its own, so a timeout ends the bench's children (brokers, agents) with it.
        proc = subprocess.Popen(args, cwd=REPO, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            text, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            text, _ = proc.communicate()
            out.timed_out = True
        out.seconds = time.monotonic() - started
        out.exit_code = proc.returncode
        out.last_lines = [line for line in (text or "").splitlines() if line.strip()][-5:]
        if records.exists():
            out.records = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
        for path in sorted(curves.glob("*.json")):
            out.curves[path.stem] = json.loads(path.read_text())
    return out


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count() or 1, "ram_gb": ram_gb,
            "commit": commit + (" (with uncommitted changes)" if dirty else ""),
            "python": platform.python_version()}


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if abs(x) >= 1000:
        text = f"{x:,.0f}"
    elif abs(x) >= 10:
        text = f"{x:.1f}"
    else:
        text = f"{x:.3g}"
    return f"{text} {unit}".strip()


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


TABLE_HEADER = ("| bench | figure | value | baseline (same run) | ratio | target | verdict |\n"
                "|---|---|---|---|---|---|---|")


def table_rows(outcomes: list[Outcome]) -> list[str]:
    rows = []
    for o in outcomes:
        failure = o.failure
        if failure is not None:
            rows.append(f"| {o.spec.name} | — | — | — | — | — | {_cell(failure)} |")
            continue
        for r in o.records:
            base = r.get("baseline") or "—"
            if r.get("baseline_value") is not None:
                base = f"{base}: {_num(r['baseline_value'], r['unit'])}"
            ratio = "—" if r.get("ratio") is None else f"{r['ratio']:.2f}"
            rows.append(f"| {o.spec.name} | {_cell(r['figure'])} | {_cell(_num(r['value'], r['unit']))} | "
                        f"{_cell(base)} | {ratio} | {_cell(r['target'])} | {r['verdict']} |")
        if o.exit_code:
            rows.append(f"| {o.spec.name} | (exit status) | {o.exit_code} | — | — | 0 | "
                        f"{'MISS' if any(r['verdict'] == 'MISS' for r in o.records) else 'FAILED'} |")
    return rows


def plot_latency(curve: dict[str, Any], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve["curve"]
    rates = [p["rate"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pct, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-")):
        ax.plot(rates, [p["edgebus"][pct] for p in points], style, label=f"edgebus {pct}")
    ax.plot(rates, [p["baseline"]["p99"] for p in points], "^--", color="grey", label="minimal paho p99")
    ax.axhline(10.0, color="red", linewidth=0.8, linestyle=":", label="target p99 at 1,000 msg/s")
    ax.set_xscale("log")
    ax.set_xticks(rates, [f"{r:,.0f}" for r in rates])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("offered load (messages/s, "
                  f"{curve['samples_per_message']} samples each)")
    ax.set_ylabel("publish -> scored and stored (ms)")
    ax.set_title(f"End-to-end latency against offered load{label}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_coordinators(curve: dict[str, Any], path: Path, label: str) -> None:
    """``curve``: {"points": [{"coordinators": n, "samples_per_s": x}, ...]} from a multi-coordinator
    bench (the name and shape a bench passes to bench.results.save_curve); an optional "y" names
    what samples_per_s is, an optional per-point "stored_per_s" is drawn beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(curve["points"], key=lambda p: p["coordinators"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["coordinators"] for p in points]
    ax.plot(xs, [p["samples_per_s"] for p in points], "o-", label=curve.get("y", "ingest samples/s"))
    if all("stored_per_s" in p for p in points):  # what the shared machine stored at the offered rate
        ax.plot(xs, [p["stored_per_s"] for p in points], "s--", label="stored samples/s (measured)")
        ax.legend(fontsize=8)
    ax.set_xticks(xs)
    ax.set_xlabel("coordinators")
    ax.set_ylabel("ingest samples/s")
    ax.set_title(f"Ingest throughput against coordinators{label}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(path: Path, outcomes: list[Outcome], info: dict[str, Any], quick: bool, started: str,
                 load_start: tuple[float, ...], load_end: tuple[float, ...], elapsed: float) -> None:
    cores = info["cores"]
    loaded = max(load_start[0], load_end[0]) > 0.5 * cores
    label = " (loaded machine)" if loaded else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    curves: dict[str, Any] = {}
    for o in outcomes:
        curves.update(o.curves)
    lines = [
        "# edgebus benchmark report",
        "",
        f"Written by `bench/report.py{' --quick' if quick else ''}` on {started} in {elapsed / 60:.1f} min.",
        "",
        f"- machine: {info['cpu']}, {cores} cores, "
        + (f"{info['ram_gb']:.1f} GB RAM" if info["ram_gb"] else "RAM unknown")
        + f", Python {info['python']}",
        f"- load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_start)} at the start, "
        f"{', '.join(f'{x:.2f}' for x in load_end)} at the end",
        f"- git commit: {info['commit']}",
        f"- mode: {'quick (short runs: figures are noisier than a full run)' if quick else 'full'}",
        "- targets: each bench's own (its docstring), from the issue that asked for the figure",
    ]
    if loaded:
        lines += ["", f"**Loaded machine:** the load average was above half the {cores} cores while this ran "
                  "(other work shared the CPUs). Speeds here are lower bounds and latencies upper bounds; "
                  "the ratios to baselines measured in the same run are the fairer figures."]
    counts = {v: sum(1 for o in outcomes for r in o.records if r["verdict"] == v) for v in ("PASS", "MISS")}
    failed = [o.spec.name for o in outcomes if o.failure is not None]
    lines += ["", f"{counts['PASS']} PASS, {counts['MISS']} MISS"
              + (f", {len(failed)} bench(es) without figures: {', '.join(failed)}" if failed else ""), ""]
    rows = table_rows(outcomes)
    # Issue 18's targets that no bench has measured in this run stay in the table as such.
    unmeasured = [("dead coordinator's devices moved", "< 2 s",
                   "NOT MEASURED here: tests/test_cluster_coordinators.py prints it (0.03-0.23 s)")]
    if "coordinators" not in curves:
        unmeasured.insert(0, ("ingest with 3 coordinators / 1", ">= 2.4, zero loss",
                              "NOT MEASURED: bench/cluster_scale.py did not run"))
    rows += [f"| (issue 18) | {figure} | — | — | — | {target} | {why} |"
             for figure, target, why in unmeasured]
    lines += [TABLE_HEADER, *rows, ""]
    lines += ["## Runs", "", "| bench | arguments | seconds | 1-min load at start | exit |",
              "|---|---|---|---|---|"]
    for o in outcomes:
        args = " ".join(o.spec.quick if quick else o.spec.full) or "(defaults)"
        end = "timeout" if o.timed_out else str(o.exit_code)
        lines.append(f"| {o.spec.name} | `{args}` | {o.seconds:.0f} | {o.load:.2f} | {end} |")
    lines += ["", "## Plots", ""]
    latency = curves.get("latency")
    if latency:
        png = path.with_name(path.stem + "-latency.png")
        plot_latency(latency, png, label)
        lines += [f"![end-to-end latency against offered load]({png.name})", "",
                  "| msg/s | edgebus p50 / p90 / p99 ms | minimal paho p50 / p90 / p99 ms |", "|---|---|---|"]
        for p in latency["curve"]:
            e, b = p["edgebus"], p["baseline"]
            lines.append(f"| {p['rate']:,.0f} | {e['p50']:.2f} / {e['p90']:.2f} / {e['p99']:.2f} | "
                         f"{b['p50']:.2f} / {b['p90']:.2f} / {b['p99']:.2f} |")
        lines.append("")
    else:
        lines += ["End-to-end latency against offered load: not measured in this run "
                  "(bench/ingest.py --latency did not run or did not finish).", ""]
    scaling = curves.get("coordinators")
    if scaling:
        png = path.with_name(path.stem + "-coordinators.png")
        plot_coordinators(scaling, png, label)
        lines += [f"![ingest throughput against coordinators]({png.name})", ""]
    else:
        lines += ["Ingest throughput against the number of coordinators: not measured: "
                  "bench/cluster_scale.py did not run.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs of every bench")
    parser.add_argument("--out", type=Path, default=BENCH / "REPORT.md",
                        help="the report (default bench/REPORT.md); plots beside it")
    parser.add_argument("--only", help="comma-separated bench names (default: every bench)")
    parser.add_argument("--timeout", type=float, help="seconds per bench (default 900, quick 300)")
    args = parser.parse_args(argv)
    specs = all_specs()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {s.name for s in specs})
        if unknown:
            known = ", ".join(s.name for s in specs)
            parser.error(f"unknown bench(es): {', '.join(unknown)}; known: {known}")
        specs = [s for s in specs if s.name in wanted]
    timeout = args.timeout or (300.0 if args.quick else 900.0)
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin"  # mosquitto
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start, began = os.getloadavg(), time.monotonic()
    info = machine()
    outcomes = []
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec.name} ...", end=" ", file=sys.stderr, flush=True)
        o = run_bench(spec, args.quick, timeout, env)
        verdicts = [r["verdict"] for r in o.records]
        summary = o.failure or f"{verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS"
        print(f"{o.seconds:.0f} s, {summary}", file=sys.stderr, flush=True)
        outcomes.append(o)
    write_report(args.out, outcomes, info, args.quick, started, load_start, os.getloadavg(),
                 time.monotonic() - began)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
