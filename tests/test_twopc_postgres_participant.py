"""A PostgreSQL participant process killed with -9 after it prepared: restarted, it resolves as decided.

Real everything: Mosquitto, three ``edge-bus raft serve`` processes, a private
PostgreSQL with prepared transactions on, and the participant as its own
``edge-bus tx participant --sql ...`` process. Nothing is left in
``pg_prepared_xacts`` afterwards, and the row exists exactly when the group
decided commit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.coordination.local_cluster import GroupWatcher, LocalCluster
from broker.session import BusSession
from broker.twopc.client import TxClient, TxOutcome
from broker.twopc.sql_work import encode_statements
from protocols.twopc import Part
from tests.brokers import MosquittoUnderTest
from tests.postgres_server import PrivatePostgres
from tests.twopc_helpers import RunningParticipant, bus_config, start_participant, wait_until

NODES = ["n1", "n2", "n3"]
GROUP = "pg"


def _participant(broker: MosquittoUnderTest, url: str, store: Path, log: Path,
                 action: str = "participant") -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "broker.bus_cli", "tx", action, "--host", broker.host,
           "--port", str(broker.port), "--group", GROUP, "--id", "db-1", "--store", str(store), "--sql", url]
    if broker.username:
        cmd += ["--username", broker.username]
    env = {**os.environ, "EDGEBUS_BROKER_PASSWORD": broker.password or ""}
    with log.open("a") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)


def _voted(store: Path) -> bool:
    """The participant's durable record exists: its yes vote follows it out."""
    db = store / f"participant-{GROUP}-db-1.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(str(db), timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM tx_records").fetchone()[0] > 0
    except sqlite3.Error:
        return False


@pytest.fixture
def group(mosquitto_broker: MosquittoUnderTest,
          tmp_path: Path) -> Iterator[tuple[TxClient, RunningParticipant]]:
    cluster = LocalCluster(bus_config(mosquitto_broker, "unused"), GROUP, tmp_path / "raft")
    session = BusSession(bus_config(mosquitto_broker, "pg-test"))
    watcher = GroupWatcher(session, GROUP)
    client = TxClient(session, GROUP, "pg-client", retry_s=0.3)
    session.start()
    assert session.wait_connected(10) and session.wait_subscribed(10)
    cluster.start()
    other = start_participant(mosquitto_broker, GROUP, "files", tmp_path / "parts")
    try:
        assert watcher.leader(NODES, timeout=20) is not None
        yield client, other
    finally:
        other.stop()
        cluster.stop()
        session.stop(flush_timeout=0)


@pytest.mark.parametrize("restart", ["participant", "recover"])
def test_a_postgres_participant_killed_after_preparing_resolves_as_decided(
        group: tuple[TxClient, RunningParticipant], mosquitto_broker: MosquittoUnderTest,
        private_postgres: PrivatePostgres, postgres_database: str, tmp_path: Path, restart: str) -> None:
    """Restarted as the participant again, or resolved by ``edge-bus tx recover`` (which then exits)."""
    client, other = group
    database = postgres_database.rsplit("/", 1)[1]
    with private_postgres.connect(database) as conn:
        conn.execute("CREATE TABLE moves (camera text PRIMARY KEY, agent text)")
    store, log = tmp_path / "db-1", tmp_path / "db-1.log"
    proc = _participant(mosquitto_broker, postgres_database, store, log)
    try:
        insert = encode_statements([("INSERT INTO moves VALUES (:c, :a)", {"c": "door", "a": "gw-2"})])
        # The other participant is slow, so the transaction is in flight when db-1 dies.
        parts = [Part("db-1", insert), Part("files", b'{"set": {"door": "gw-2"}, "delay": 2.0}')]
        result: list[TxOutcome] = []
        runner = threading.Thread(target=lambda: result.append(client.run(parts, timeout_s=20)))
        runner.start()
        assert wait_until(lambda: _voted(store), 30), log.read_text()
        with private_postgres.connect(database) as conn:
            prepared = conn.execute("SELECT gid FROM pg_prepared_xacts").fetchall()
        assert len(prepared) == 1  # prepared in PostgreSQL, not committed
        proc.kill()
        proc.wait(10)
        runner.join(60)
        assert result, "no decision"
        decided = result[0]
        proc = _participant(mosquitto_broker, postgres_database, store, log, restart)  # it asks the group
        if restart == "recover":
            assert proc.wait(60) == 0, log.read_text()
            assert json.loads(log.read_text().strip().splitlines()[-1])["resolved"] == [
                {"tx": decided.tx_id, "outcome": decided.outcome.value}]

        def resolved() -> bool:
            with private_postgres.connect(database) as conn:
                return conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()[0] == 0

        assert wait_until(resolved, 30), log.read_text()
        with private_postgres.connect(database) as conn:
            rows = conn.execute("SELECT camera, agent FROM moves").fetchall()
        assert rows == ([("door", "gw-2")] if decided.committed else [])
        assert wait_until(lambda: other.resource.state() == ({"door": "gw-2"} if decided.committed else {}),
                          15)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
    print(json.dumps({"outcome": decided.outcome.value}))
