"""Chaos, end to end (issue 17): ``bench/chaos.py`` as a test, marked slow (`make test-slow`).

Real agents, coordinator and Mosquitto; Mosquitto killed with -9 five times and
restarted twice, agents and the coordinator killed with -9 24 times, one agent
stopped past its keepalive. Every sample an agent accepted must be in the store
exactly once: 0 duplicated, 0 lost without being counted, nothing left unconfirmed.
Four to five minutes on the 2-core development machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers import require_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(1500)
def test_chaos_every_accepted_sample_stored_exactly_once(tmp_path: Path) -> None:
    require_mosquitto()
    out = tmp_path / "chaos.json"
    log = tmp_path / "chaos.log"
    # Its own process group: whatever happens here, the bench and every process it started go.
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "chaos.py"), "--agents", "3",
                                 "--seed", "7", "--quiet", "--json", str(out)],
                                env={**os.environ, "PYTHONPATH": str(REPO),
                                     "PATH": os.environ.get("PATH", "") + ":/usr/sbin"},
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=1400)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert out.exists(), log.read_text()
    [result] = json.loads(out.read_text())
    assert result["mosquitto_kills"] >= 5 and result["mosquitto_restarts"] >= 1
    assert result["agent_kills"] + result["coordinator_kills"] >= 20 and result["coordinator_kills"] >= 5
    assert result["sigstops"] >= 1
    assert result["sent"] > 1000, result
    assert result["duplicated"] == 0, result
    assert result["lost_uncounted"] == 0, result
    assert result["still_queued"] == 0, result
    assert result["lost_counted"] == 0, result  # the outbox never filled: nothing had to be given up
    assert result["stored"] == result["sent"] and result["exactly_once"], result
    assert proc.returncode == 0, log.read_text()
