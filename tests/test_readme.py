"""README's quick start is exactly the two Makefile targets, and CI runs README's test command."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's quick start has no sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_make_demo_and_make_test() -> None:
    assert quick_start_commands() == ["make demo", "make test"]


def test_makefile_provides_both_targets() -> None:
    for target in ("demo", "test"):
        out = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
    demo = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True,
                          timeout=60).stdout
    assert "edge-coordinator start --demo" in demo


def test_ci_runs_only_what_readme_shows() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    make_calls = re.findall(r"^\s*(make [\w-]+)", ci, re.M)
    assert "make test" in make_calls
    for call in make_calls:
        assert call in readme, f".ci/run calls {call!r}, which README does not show"
