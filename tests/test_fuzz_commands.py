"""Fuzzing the agent's command handlers (tests/fuzz_commands.py): every input answered, none a crash.

By default hypothesis sends 200 structured and mutated ``args`` to
each handler (``config``, ``assign``, ``unassign``, ``rebirth``, ``ota``),
each within a CPU and memory budget. The atheris runs (``make test-slow``)
reach ``EDGEBUS_FUZZ_COMMAND_RUNS`` inputs per handler (default 100,000)
with libFuzzer's per-input time and memory limits, and print the counts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_commands import COMMAND_SEEDS, COMMAND_TARGETS, bench
from tests.fuzz_targets import within_budget
from tests.test_fuzz_decoders import mutated, values

CPU_S = 2.0
PEAK_BYTES = 64 * 2**20
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RUNS = int(os.environ.get("EDGEBUS_FUZZ_COMMAND_RUNS", "100000"))

#: The keys each handler reads, so generated args reach past "unknown key" into the value checks.
KEYS = {
    "cmd_config": ["metrics"],
    "cmd_assign": ["camera", "source", "fps", "queue_size", "motion", "detector", "batch_interval",
                   "snapshot_max_bytes", "reconnect_min_delay", "labels", "priority", "loop"],
    "cmd_unassign": ["camera"],
    "cmd_rebirth": [],
    "cmd_ota": ["manifest", "key_id", "signature", "rollout"],
}
METRIC_KEYS = ["interval", "batch_interval", "heartbeat", "deadband", "deadbands", "collectors",
               "report_by_exception"]
numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**63), 2**64 - 1)
           | st.sampled_from([0, 0.001, 1e-300, 1e300, -1, 2**31, 10**6]))


@st.composite
def structured(draw: st.DrawFn, target: str) -> bytes:
    """A map of the handler's own keys with hostile values (numbers at the edges, nested junk)."""
    keys = KEYS[target]
    args: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []:
        args[key] = draw(numbers | values | st.text(max_size=60))
    if target == "cmd_config":
        args["metrics"] = draw(st.dictionaries(st.sampled_from(METRIC_KEYS), numbers | values, max_size=4))
    if target == "cmd_assign":
        args.setdefault("camera", draw(st.sampled_from(["door", "c", "x" * 70, ""]) | st.text(max_size=8)))
        args.setdefault("source", draw(st.sampled_from(
            ["/etc/shadow", "/dev/video0", "rtsp://10.0.0.5/s", "file:///root/x", "http://169.254.169.254/",
             "rtsp://a@169.254.169.254/", "/dev/../etc/passwd", 0, -1, 2**63]) | st.text(max_size=40)))
    return bytes(msgpack.packb(args, use_bin_type=True))


@pytest.fixture(autouse=True)
def _quiet_logging_in_this_test_only() -> Iterator[None]:
    """Every refusal logs a warning; later tests in this process (another file) need logging back."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("target", sorted(COMMAND_TARGETS))
def test_every_handler_answers_hostile_args_within_budget(target: str) -> None:
    run = COMMAND_TARGETS[target]

    @FUZZ
    @given(data=structured(target) | mutated(COMMAND_SEEDS[target]) | st.binary(max_size=200))
    def check(data: bytes) -> None:
        within_budget(run, data, cpu_s=CPU_S, peak_bytes=PEAK_BYTES)

    bench()  # the agent, its imports (OpenCV, onnxruntime) and its outbox: set up outside the budget
    for seed in COMMAND_SEEDS[target]:
        within_budget(run, seed, cpu_s=CPU_S, peak_bytes=PEAK_BYTES)
    check()


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(COMMAND_TARGETS))
def test_atheris_reaches_the_input_count_on_every_handler(target: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("atheris")
    from tests.test_fuzz_atheris import check_atheris_run

    check_atheris_run(target, tmp_path, RUNS, capsys)
