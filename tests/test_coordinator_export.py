"""`edge-coordinator export`: a device's raw samples out of the store as CSV, with clear refusals."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

from coordinator.store import SampleRecord, WriteBatch, open_store

REPO = Path(__file__).resolve().parents[1]
T0 = 1_763_900_000_000


def export(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from coordinator.cli import main; raise SystemExit(main())", "export",
         "--data-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_export_writes_the_stored_samples(tmp_path: Path) -> None:
    with open_store({}, data_dir=tmp_path) as store:
        store.write_batch(WriteBatch(samples=[SampleRecord("gw-1", 1, i, T0 + i * 1000, name, float(i))
                                              for i, name in enumerate(["cpu", "temp"] * 5)]))
    out = export(tmp_path, "--device", "gw-1")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["seq"], r["metric"], r["value"]) for r in rows] == [
        (str(i), ["cpu", "temp"][i % 2], f"{float(i)}") for i in range(10)]
    one = export(tmp_path, "--device", "gw-1", "--metric", "temp", "--since", "2025-11-23T12:13:24Z",
                 "-o", str(tmp_path / "temp.csv"))
    assert one.returncode == 0 and one.stdout == ""
    assert [r["seq"] for r in csv.DictReader((tmp_path / "temp.csv").open())] == ["5", "7", "9"]


def test_export_refuses_clearly(tmp_path: Path) -> None:
    with open_store({}, data_dir=tmp_path):
        pass
    unknown = export(tmp_path, "--device", "nope")
    assert unknown.returncode == 2 and "no device 'nope'" in unknown.stderr
    bad_time = export(tmp_path, "--device", "nope", "--since", "last tuesday")
    assert bad_time.returncode == 2 and "--since" in bad_time.stderr
