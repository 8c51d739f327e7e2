"""atheris (libFuzzer, coverage-guided) over every fuzz target: at least 100,000 inputs each.

Slow (``make test-slow``): each target runs in a process of its own
(tests/fuzz_atheris.py) from the seeds of tests/fuzz_targets.py, with a time
budget per input (``-timeout``) and a memory budget for the process
(``-rss_limit_mb``, checked while it runs); an input that raises, hangs or
blows the memory fails the test, which shows the input libFuzzer saved. The
number of inputs run is printed for each target. ``EDGEBUS_FUZZ_RUNS`` sets
the count (default 500,000).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz_commands import COMMAND_SEEDS
from tests.fuzz_targets import SEEDS, TARGETS

pytestmark = pytest.mark.slow
pytest.importorskip("atheris")

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("EDGEBUS_FUZZ_RUNS", "500000"))
#: Targets whose one input is a whole exchange (up to 32 signed frames through a replica and a client):
#: 100,000 of them are about 3 million handler calls, and 500,000 would not fit the per-test timeout.
RUNS_FOR = {"pbft_replica": min(RUNS, 100_000)}
TIMEOUT_S = 5
RSS_LIMIT_MB = 1024


def run_atheris(target: str, workdir: Path, runs: int) -> subprocess.CompletedProcess[str]:
    corpus = workdir / "corpus"
    corpus.mkdir()
    for i, seed in enumerate({**SEEDS, **COMMAND_SEEDS}["envelope" if target == "canary" else target]):
        (corpus / f"seed-{i}").write_bytes(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tests.fuzz_atheris", target, f"-runs={runs}", f"-timeout={TIMEOUT_S}",
         f"-rss_limit_mb={RSS_LIMIT_MB}", "-max_len=16384", "-print_final_stats=1",
         f"-artifact_prefix={workdir}/", str(corpus)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)


def executed(output: str) -> int:
    found = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    return int(found.group(1)) if found else 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_runs_every_target_without_a_failing_input(target: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    check_atheris_run(target, tmp_path, RUNS_FOR.get(target, RUNS), capsys)


def check_atheris_run(target: str, workdir: Path, want: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Run ``want`` inputs of ``target``, print the count and peak RSS, and fail on any saved input."""
    done = run_atheris(target, workdir, want)
    runs = executed(done.stderr)
    peak = re.search(r"stat::peak_rss_mb:\s*(\d+)", done.stderr)
    with capsys.disabled():
        print(f"\natheris {target}: {runs} inputs, peak RSS {peak.group(1) if peak else '?'} MB, "
              f"exit {done.returncode}")
    crashes = sorted(p.name for p in workdir.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert done.returncode == 0 and not crashes, f"{crashes}\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert runs >= want


def test_atheris_reports_a_failing_input(tmp_path: Path) -> None:
    """The harness can fail: a target that raises on any envelope is caught and its input saved."""
    done = run_atheris("canary", tmp_path, 10_000)
    assert done.returncode != 0
    assert "canary: an input starting with EB" in done.stdout + done.stderr  # atheris prints it on stdout
    assert any(p.name.startswith("crash-") for p in tmp_path.iterdir())
