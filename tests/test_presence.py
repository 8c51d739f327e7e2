"""Presence (issue 20): a device that stops answering shows ``offline`` by its will.

A device that loses power or network never closes its connection; only the
broker's keepalive check notices (MQTT 3.1.1 §3.1.2.10: no packet for 1.5 x
the keepalive) and publishes the will, ``offline`` on the device's retained
status topic. An agent stopped with SIGSTOP is such a device: its socket stays
open and nothing comes out of it. Run on the embedded broker, the default,
and on Mosquitto for reference.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_helpers import agent_toml, reap_agent, spawn_agent
from tests.brokers import RunningBroker
from tests.bus_helpers import observer

pytestmark = pytest.mark.integration

DEVICE = "gw-presence"
STATUS = f"edgebus/{DEVICE}/status"
#: The smallest keepalive edgebus accepts (broker/session.py), so the test is short.
KEEPALIVE = 5
#: Generous room, beyond 1.5 x keepalive, for a loaded test machine to deliver the will.
SLACK = 3.0
#: Mosquitto 2.0 before 2.0.21 sweeps keepalives at most every 6 s (tests/conformance/test_will.py).
SWEEP = {"mosquitto": 6.0}


@pytest.fixture
def agent(broker: RunningBroker, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    config = agent_toml(broker, tmp_path, DEVICE, broker_options={"keepalive": KEEPALIVE},
                        interval=0.5, batch_interval=1.0, collectors=["agent"])
    proc = spawn_agent(config)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        reap_agent(proc)


def test_a_stopped_agent_shows_offline_within_one_and_a_half_keepalives(
        broker: RunningBroker, agent: subprocess.Popen[str]) -> None:
    obs, inbox = observer(broker, STATUS)
    try:
        assert inbox.wait_last(STATUS, b"online"), f"agent never online: {inbox.payloads(STATUS)}"
        agent.send_signal(signal.SIGSTOP)
        bound = 1.5 * KEEPALIVE + SWEEP.get(broker.kind, 0.0) + SLACK
        assert inbox.wait_last(STATUS, b"offline", timeout=bound), (
            f"no offline within {bound:g} s of SIGSTOP (keepalive {KEEPALIVE} s); "
            f"status went {inbox.payloads(STATUS)}")
        # Woken up, the agent finds its connection gone, reconnects and is online again.
        agent.send_signal(signal.SIGCONT)
        assert inbox.wait_last(STATUS, b"online"), f"status went {inbox.payloads(STATUS)}"
    finally:
        obs.stop()
