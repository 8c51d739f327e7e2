"""A real agent process through a real Mosquitto into the coordinator, across restarts of both.

The agent publishes its metrics at QoS 1 from its outbox; the coordinator holds a
persistent session. Mosquitto is stopped and started again mid-stream (its
persistence file keeps the coordinator's queued messages), then the coordinator
itself is restarted while the agent keeps publishing. At the end every sample the
agent sequenced must be in the store exactly once: no gap in the sequence numbers,
no duplicate rows, and the ingest accounting agrees.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from coordinator.ingest import Ingest
from coordinator.store.blocks import decode_block
from coordinator.store.plugins.sql import DEFAULT_DB_NAME
from tests.agent_helpers import agent_toml, spawn_agent
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import WAIT, observer, wait_until
from tests.coordinator_helpers import start_coordinator, stop_coordinator

pytestmark = pytest.mark.integration

DEVICE = "restart-gw"


def stored_sequence(db: Path) -> tuple[int, int, int, int]:
    """(samples, epochs, lowest seq, highest seq) of the device's stored samples; fails on a stored repeat."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT epoch, first_seq, body FROM metric_blocks WHERE device = ?",
                            (DEVICE,)).fetchall()
    seqs = [(epoch, seq) for epoch, first_seq, body in rows
            for seq, *_ in decode_block(DEVICE, epoch, first_seq, body).samples()]
    assert len(seqs) == len(set(seqs)), "a sample is stored twice"
    numbers = [seq for _, seq in seqs]
    return len(seqs), len({epoch for epoch, _ in seqs}), min(numbers, default=-1), max(numbers, default=-1)


def test_every_sample_stored_once_across_broker_and_coordinator_restarts(
        mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> None:
    data = tmp_path / "coordinator"
    parts = start_coordinator(mosquitto_broker, data, client_id="coordinator-e2e",
                              clean_start=False)
    config = agent_toml(mosquitto_broker, tmp_path, DEVICE, interval=0.05, batch_interval=0.2,
                        collectors=["cpu", "memory"])
    agent = spawn_agent(config)
    try:
        store = parts[3]
        assert wait_until(lambda: store.count_samples(DEVICE) > 50), "no samples before the restarts"

        # 1. The broker goes away (graceful stop saves its persistence) and comes back on the same port.
        mosquitto_broker.stop()
        before = store.count_samples(DEVICE)
        mosquitto_broker.start()
        assert parts[0].wait_connected(WAIT)
        assert wait_until(lambda: store.count_samples(DEVICE) > before + 50), "ingest did not resume"

        # 2. The coordinator goes away; the broker queues for its persistent session meanwhile.
        stop_coordinator(parts)
        watcher, seen = observer(mosquitto_broker, f"edgebus/{DEVICE}/metrics", name="watcher")
        try:
            assert seen.wait_for(lambda ms: len(ms) >= 3), "the agent published nothing while we were away"
        finally:
            watcher.stop()
        assert agent.poll() is None
        parts = start_coordinator(mosquitto_broker, data, client_id="coordinator-e2e",
                              clean_start=False)
        store = parts[3]
        assert wait_until(lambda: parts[1].stats().samples > 0), "nothing queued for the persistent session"

        # 3. The agent stops gracefully: what its outbox held is flushed before it exits.
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        ingest = parts[1]
        assert wait_until(lambda: ingest.drain(0.2) and _settled(ingest), timeout=WAIT)
        state = ingest.sequence_snapshot()[DEVICE]
        rows, epochs, low, high = stored_sequence(data / DEFAULT_DB_NAME)
        assert state.missing == 0, f"sequence gaps after the restarts: {state}"
        assert epochs == 1, "the agent restarted its sequence"
        assert (low, high) == (0, rows - 1), f"stored seqs {low}..{high} are not 0..{rows - 1}"
        assert high == state.highest
        assert rows > 150
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
        stop_coordinator(parts)


def _settled(ingest: Ingest) -> bool:
    """True when no more messages arrive for a moment (the agent's last flush is in)."""
    before = ingest.stats().messages
    time.sleep(0.5)
    return ingest.stats().messages == before and ingest.drain(0.1)

