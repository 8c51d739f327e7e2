"""bench/report.py: one markdown table where every row has a verdict or says why it has none."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.report import Spec, run_bench, table_rows

REPO = Path(__file__).resolve().parents[1]
VERDICT = re.compile(r"^(PASS|MISS|FAILED|TIMEOUT|NO FIGURES|NOT MEASURED)")


def table(markdown: str) -> list[list[str]]:
    """The rows of the figures table (the first table), as cells."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| bench | figure |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_report_on_the_codec_bench(tmp_path: Path) -> None:
    out = tmp_path / "REPORT.md"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), "--quick", "--only", "codec",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[1/1] codec ..." in done.stderr
    text = out.read_text()
    assert re.search(r"load average \(1, 5, 15 min\): [\d.]+, [\d.]+, [\d.]+ at the start", text)
    assert "git commit: " in text and " cores, " in text
    assert "not measured: bench/cluster_scale.py did not run" in text
    rows = table(text)
    assert len(rows) >= 2
    for row in rows:
        assert len(row) == 7, row
        assert row[0] in ("codec", "(issue 18)")
        assert VERDICT.match(row[6]), row
    assert sum(row[0] == "codec" for row in rows) == 2
    size = next(row for row in rows if row[1].startswith("envelope size"))
    assert size[3].startswith("compact JSON: ") and float(size[4]) > 0  # baseline and ratio


def test_a_failing_or_slow_bench_is_a_row_not_a_gap() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    missing = run_bench(Spec("missing", "no_such_bench.py"), quick=True, timeout=60, env=env)
    slow = run_bench(Spec("codec", "codec.py"), quick=True, timeout=0.2, env=env)
    rows = table_rows([missing, slow])
    assert len(rows) == 2
    assert rows[0].startswith("| missing |") and "FAILED (exit 2)" in rows[0]
    assert rows[1].startswith("| codec |") and "TIMEOUT after" in rows[1]
