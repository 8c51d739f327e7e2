"""The embedded broker's store (broker/broker_store.py): what survives a restart, and how."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from broker.broker_store import BrokerStore, StoredMessage
from schemas.errors import StorageError

BINARY = bytes(range(256))  # every byte value: envelopes are binary, not UTF-8



def test_sessions_subscriptions_queues_and_retained_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite3"
    store = BrokerStore(path)
    store.save_session("gw-1", "gw-1")
    store.subscribe("gw-1", "edgebus/gw-1/cmd/#", 1)
    store.subscribe("gw-1", "edgebus/gw-1/cmd/#", 2)  # a new SUBSCRIBE replaces the QoS
    store.subscribe("gw-1", "edgebus/_sys/#", 1)
    store.unsubscribe("gw-1", "edgebus/_sys/#")
    for n in range(3):
        store.queue("gw-1", "edgebus/gw-1/cmd/x", BINARY + bytes([n]), 1)
    store.session_offline("gw-1", 900.0)
    store.retain("edgebus/gw-1/status", b"offline", 1)
    store.retain("edgebus/gw-1/status", b"online", 0)
    store.retain("edgebus/gw-2/status", b"online", 1)
    store.clear_retained("edgebus/gw-2/status")
    store.close()

    state = BrokerStore(path).load(now=1000.0)
    [session] = state.sessions
    assert (session.client_id, session.username, session.disconnected_at) == ("gw-1", "gw-1", 900.0)
    assert session.subscriptions == (("edgebus/gw-1/cmd/#", 2),)
    assert [m.payload[-1] for m in session.queued] == [0, 1, 2]
    assert all(m.payload[:256] == BINARY and m.qos == 1 for m in session.queued)
    assert state.retained == (StoredMessage("edgebus/gw-1/status", b"online", 0),)


def test_a_reconnect_clears_the_queue_and_a_clean_session_forgets(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path / "s.sqlite3")
    for client in ("a", "b"):
        store.save_session(client, "u")
        store.subscribe(client, "t", 1)
        store.queue(client, "t", b"1", 1)
    store.clear_queue("a")
    store.forget_session("b")
    store.commit()
    state = store.load(now=0.0)
    assert [(s.client_id, s.subscriptions, s.queued) for s in state.sessions] == [
        ("a", (("t", 1),), ())]


def test_replace_queue_keeps_what_is_owed_in_order(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path / "s.sqlite3")
    store.save_session("a", "u")
    store.queue("a", "t", b"stale", 1)
    owed = [StoredMessage("t", b"in-flight", 1), StoredMessage("t", b"queued", 2)]
    store.replace_queue("a", owed)
    store.commit()
    assert store.load(now=0.0).sessions[0].queued == tuple(owed)


def test_expired_sessions_are_dropped_at_load(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path / "s.sqlite3")
    for client, offline_at in (("old", 100.0), ("recent", 950.0)):
        store.save_session(client, "u")
        store.subscribe(client, "t", 1)
        store.queue(client, "t", b"x", 1)
        store.session_offline(client, offline_at)
    store.save_session("online", "u")  # connected when the broker stopped: never expired
    store.commit()
    assert [s.client_id for s in store.load(now=1000.0, session_expiry=300).sessions] == [
        "online", "recent"]
    store.close()
    db = sqlite3.connect(tmp_path / "s.sqlite3")
    assert db.execute("SELECT count(*) FROM queued WHERE client_id = 'old'").fetchone() == (0,)
    db.close()


def test_writes_wait_for_commit(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = BrokerStore(path)
    store.retain("t", b"v", 1)
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM retained").fetchone() == (0,)
    store.commit()
    assert other.execute("SELECT count(*) FROM retained").fetchone() == (1,)
    other.close()
    store.close()


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "broker.sqlite3"
    BrokerStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_newer_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(StorageError, match=r"newer edgebus \(schema 7, this one knows 1\)"):
        BrokerStore(newer)
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="cannot open the broker's store"):
        BrokerStore(broken)


def test_a_stored_message_checks_its_qos() -> None:
    with pytest.raises(StorageError, match="QoS 3"):
        StoredMessage("t", b"", 3)
