"""One fuzz target of tests/fuzz_targets.py under atheris (libFuzzer), with coverage of our packages.

    python -m tests.fuzz_atheris TARGET [libFuzzer flags] [corpus directories]

For example ``python -m tests.fuzz_atheris envelope -runs=100000 -timeout=5
-rss_limit_mb=1024``: libFuzzer stops at the first input that raises
(writing it as ``crash-*``), runs longer than ``-timeout`` seconds, or takes
the process past ``-rss_limit_mb``, and prints the number of inputs run
(``stat::number_of_executed_units`` with ``-print_final_stats=1``).
tests/test_fuzz_atheris.py runs every target this way (``make test-slow``).
"""

from __future__ import annotations

import sys


def canary(data: bytes) -> None:
    """A target that fails on any envelope: shows that a failing input stops the run and is reported."""
    if data.startswith(b"EB"):
        raise AssertionError("canary: an input starting with EB")


def main(argv: list[str]) -> None:
    import atheris  # imported here: the test suite imports this module without atheris installed

    if len(argv) < 2:
        raise SystemExit(__doc__)
    name = argv.pop(1)
    with atheris.instrument_imports(include=["schemas", "protocols", "coordinator", "agents"]):
        from tests.fuzz_commands import COMMAND_TARGETS
        from tests.fuzz_targets import TARGETS

        if name == "ingest":
            import coordinator.ingest  # noqa: F401  (instrumented; the target imports it on first use)
        if name in COMMAND_TARGETS:
            from tests.fuzz_commands import bench

            bench()  # the agent's modules imported (and instrumented) here, not on the first input
    targets = {**TARGETS, **COMMAND_TARGETS, "canary": canary}
    if name not in targets:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(sorted(targets))}")
    target = targets[name]

    def one_input(data: bytes) -> None:
        target(data)

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
