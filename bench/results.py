"""One benchmark figure as a record, and the PASS/MISS verdict every bench prints.

Each bench prints its figures for a reader as it always did and, beside each
PASS/MISS line, calls :func:`record`. When the environment names a file in
``EDGEBUS_BENCH_RECORDS`` (bench/report.py sets it for each bench it runs),
the record is appended to it as one JSON line, so the report reads figures,
baselines and verdicts without parsing the screen output. A bench that
measures a curve (latency against offered load, throughput against the
number of coordinators) hands it over with :func:`save_curve` the same way,
for the report's plots.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

RECORDS_ENV = "EDGEBUS_BENCH_RECORDS"
CURVES_ENV = "EDGEBUS_BENCH_CURVES"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass(frozen=True)
class Figure:
    """A measured figure, its baseline from the same run (if it has one) and its target."""

    figure: str
    value: float
    unit: str
    target: str
    ok: bool
    baseline: str = ""
    baseline_value: float | None = None

    def __post_init__(self) -> None:
        if not self.figure or not self.target:
            raise ValueError("a figure needs a name and a target")

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or self.baseline_value == 0 or math.isnan(self.baseline_value):
            return None
        return self.value / self.baseline_value

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        out["ratio"] = self.ratio
        out["verdict"] = verdict(self.ok)
        return out


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def record(figure: str, value: float, unit: str, *, target: str, ok: bool, baseline: str = "",
           baseline_value: float | None = None) -> Figure:
    """Make the figure's record and append it to ``$EDGEBUS_BENCH_RECORDS`` when that is set."""
    fig = Figure(figure, float(value), unit, target, bool(ok), baseline, baseline_value)
    path = os.environ.get(RECORDS_ENV)
    if path:
        row = fig.to_json()
        row["value"], row["baseline_value"], row["ratio"] = (
            _finite(fig.value), _finite(fig.baseline_value), _finite(fig.ratio))
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return fig


def save_curve(name: str, data: dict[str, object]) -> None:
    """Write ``data`` as ``$EDGEBUS_BENCH_CURVES/<name>.json`` when that directory is set.

    Names bench/report.py plots: ``latency`` (end-to-end latency against offered load:
    ``{"samples_per_message": n, "curve": [{"rate": msg/s, "edgebus": {"p50", "p90", "p99", "max"},
    "baseline": {...}}, ...]}``, from bench/ingest.py ``--latency``) and ``coordinators``
    (ingest throughput against the number of coordinators:
    ``{"points": [{"coordinators": n, "samples_per_s": x}, ...]}``, optionally ``"y"`` naming what
    samples_per_s is and a per-point ``"stored_per_s"``, from bench/cluster_scale.py).
    """
    folder = os.environ.get(CURVES_ENV)
    if folder:
        (Path(folder) / f"{name}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
