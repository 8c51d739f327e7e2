"""The embedded broker (amqtt 0.12) as clients see it, and its credentials file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.credentials import (
    Credentials,
    load_credentials,
    load_or_create_credentials,
    write_credentials,
)
from broker.embedded import PASSWORD_FILE, STORE_FILE, EmbeddedBroker
from schemas.errors import BrokerError, ConfigError
from tests.brokers import EmbeddedUnderTest, MqttProbe, RunningBroker, free_port, require_mosquitto

REPO = Path(__file__).resolve().parents[1]

integration = pytest.mark.integration


# -- credentials (no broker) -----------------------------------------------------


def test_credentials_file_is_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path / "broker")
    path = tmp_path / "broker" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.username == "edgebus" and len(first.password) >= 32
    assert load_or_create_credentials(tmp_path / "broker") == first
    assert load_credentials(path) == first
    assert "***" in repr(first) and first.password not in repr(first)


def test_credentials_file_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"username": "u", "password": "p", "pasword": "x"}))
    with pytest.raises(ConfigError, match="'pasword'"):
        load_credentials(path)
    path.write_text(json.dumps({"username": "u"}))
    with pytest.raises(ConfigError, match="missing key 'password'"):
        load_credentials(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_credentials(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_credentials(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="':'"):
        Credentials("a:b", "p")
    write_credentials(path, Credentials("u", "p"))
    assert load_credentials(path) == Credentials("u", "p")


def test_broker_configuration_is_checked_before_start(tmp_path: Path) -> None:
    creds = [Credentials("admin", "pw")]
    with pytest.raises(ConfigError, match=r"acl\.nobody"):
        EmbeddedBroker(port=0, data_dir=tmp_path, credentials=creds,
                       acl={"nobody": {"publish": ["#"]}})
    with pytest.raises(ConfigError, match=r"acl\.admin\.publsh"):
        EmbeddedBroker(port=0, data_dir=tmp_path, credentials=creds,
                       acl={"admin": {"publsh": ["#"]}})
    with pytest.raises(ConfigError, match="'#' must be the last level"):
        EmbeddedBroker(port=0, data_dir=tmp_path, credentials=creds,
                       acl={"admin": {"subscribe": ["a/#/b"]}})
    with pytest.raises(ConfigError, match="listed twice"):
        EmbeddedBroker(port=0, data_dir=tmp_path, credentials=creds * 2)
    with pytest.raises(ConfigError, match="nobody could connect"):
        EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[])


# -- the broker --------------------------------------------------------------------


@integration
@pytest.mark.parametrize("qos", [0, 1])
def test_round_trip(embedded_broker: EmbeddedUnderTest, qos: int) -> None:
    with MqttProbe(embedded_broker).connected() as sub, \
            MqttProbe(embedded_broker).connected() as pub:
        assert [c.value for c in sub.subscribe("edgebus/+/metrics", qos)] == [qos]
        pub.publish("edgebus/gw-1/metrics", b"sample", qos=qos)
        got = sub.expect()
        assert (got.topic, got.payload, got.qos) == ("edgebus/gw-1/metrics", b"sample", qos)


@integration
def test_wrong_password_and_anonymous_are_refused(embedded_broker: EmbeddedUnderTest) -> None:
    with MqttProbe(embedded_broker, "wrong", embedded_broker.username, "wrong") as probe:
        rc, _ = probe.connect()
        assert rc.is_failure and rc.getName() == "Not authorized"
    with MqttProbe(embedded_broker, "stranger", "stranger", "x") as probe:
        rc, _ = probe.connect()
        assert rc.is_failure
    with MqttProbe((embedded_broker.host, embedded_broker.port), "anonymous") as probe:
        rc, _ = probe.connect()
        assert rc.is_failure and rc.getName() == "Not authorized"
    # A refused client id can log in properly afterwards.
    with MqttProbe(embedded_broker, "wrong") as probe:
        rc, _ = probe.connect()
        assert not rc.is_failure


@integration
def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port, data_dir=tmp_path,
                                credentials=[Credentials("admin", "pw")])
        with pytest.raises(BrokerError, match=rf"port {port} .*already in use; pass --port"):
            broker.start()
        assert not broker.running
        broker.stop()  # harmless when it never started


@integration
def test_stop_and_start_on_the_same_port(embedded_broker: EmbeddedUnderTest) -> None:
    port = embedded_broker.port
    assert port != 0
    with MqttProbe(embedded_broker).connected() as probe:
        probe.subscribe("a/b")
        embedded_broker.stop()
        # The port is free once stop() returns.
        with socket.create_server(("127.0.0.1", port)):
            pass
        embedded_broker.start()
    assert embedded_broker.port == port
    with MqttProbe(embedded_broker).connected() as sub, \
            MqttProbe(embedded_broker).connected() as pub:
        sub.subscribe("a/b")
        pub.publish("a/b", b"again")
        assert sub.expect().payload == b"again"


@integration
def test_default_credentials_live_in_the_data_dir(tmp_path: Path) -> None:
    with EmbeddedBroker(port=0, data_dir=tmp_path) as broker:
        creds = load_credentials(tmp_path / "credentials.json")
        assert broker.credentials == (creds,)
        passwd = (tmp_path / PASSWORD_FILE).read_text()
        assert f"{creds.username}:$argon2id$" in passwd
        assert stat.S_IMODE((tmp_path / PASSWORD_FILE).stat().st_mode) == 0o600
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        with MqttProbe(("127.0.0.1", broker.port), None, creds.username, creds.password) as p:
            assert not p.connect()[0].is_failure
    assert not broker.running


@integration
def test_persistent_session_queues_while_away_and_across_restart(
    embedded_broker: EmbeddedUnderTest,
) -> None:
    envelope = b"\xb0\x01\x93\xff\xfe"  # binary, as edgebus envelopes are (not UTF-8)
    with MqttProbe(embedded_broker, "keeper", clean_session=False) as sub:
        rc, present = sub.connect()
        assert not rc.is_failure and not present
        sub.subscribe("edgebus/gw-1/metrics", 1)
    with MqttProbe(embedded_broker).connected() as pub:
        for i in range(3):
            pub.publish("edgebus/gw-1/metrics", f"m{i}".encode(), qos=1)
    with MqttProbe(embedded_broker, "keeper", clean_session=False) as sub:
        rc, present = sub.connect()
        assert present and not rc.is_failure
        assert [sub.expect().payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
    with MqttProbe(embedded_broker).connected() as pub:
        pub.publish("edgebus/gw-1/metrics", envelope, qos=1)
    embedded_broker.stop()
    embedded_broker.start()
    with MqttProbe(embedded_broker, "keeper", clean_session=False) as sub:
        rc, present = sub.connect()
        assert present and not rc.is_failure
        # Only what was still owed: the three delivered before the restart do not come again.
        got = sub.expect()
        assert (got.payload, got.retain) == (envelope, False)
        assert sub.drain(0.5) == []
    embedded_broker.stop()
    embedded_broker.start()
    with MqttProbe(embedded_broker, "keeper", clean_session=False) as sub:
        assert sub.connect()[1]
        assert sub.drain(0.5) == []


@integration
def test_unsubscribe_and_clean_session_are_kept_across_restart(
    embedded_broker: EmbeddedUnderTest,
) -> None:
    with MqttProbe(embedded_broker, "keeper", clean_session=False).connected() as sub:
        sub.subscribe("edgebus/a", 1)
        sub.subscribe("edgebus/b", 1)
        sub.unsubscribe("edgebus/a")
    with MqttProbe(embedded_broker, "forgotten", clean_session=False).connected() as gone:
        gone.subscribe("edgebus/a", 1)
    with MqttProbe(embedded_broker, "forgotten", clean_session=True).connected():
        pass  # a clean session ends the stored one
    embedded_broker.stop()
    embedded_broker.start()
    with MqttProbe(embedded_broker).connected() as pub:
        pub.publish("edgebus/a", b"a", qos=1)
        pub.publish("edgebus/b", b"b", qos=1)
    with MqttProbe(embedded_broker, "keeper", clean_session=False) as sub:
        assert sub.connect()[1]
        assert [m.payload for m in sub.drain(0.5)] == [b"b"]
    with MqttProbe(embedded_broker, "forgotten", clean_session=False) as gone:
        assert not gone.connect()[1]
        assert gone.drain(0.3) == []


@integration
def test_without_persistence_a_restart_forgets(tmp_path: Path) -> None:
    creds = Credentials("admin", "pw")
    broker = EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[creds], persistence=False)
    with broker:
        target = ("127.0.0.1", broker.port)
        with MqttProbe(target, "keeper", "admin", "pw", clean_session=False).connected() as sub:
            sub.subscribe("edgebus/x", 1)
        with MqttProbe(target, None, "admin", "pw").connected() as pub:
            pub.publish("edgebus/s", b"on", retain=True)
    assert not (tmp_path / STORE_FILE).exists()
    with broker, MqttProbe(("127.0.0.1", broker.port), "keeper", "admin", "pw",
                           clean_session=False) as sub:
        assert not sub.connect()[1]
        sub.subscribe("edgebus/s", 1)
        assert sub.drain(0.3) == []


def test_a_store_from_a_newer_edgebus_stops_the_start(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    broker = EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[Credentials("a", "b")])
    with pytest.raises(BrokerError, match=r"newer edgebus \(schema 99"):
        broker.start()
    assert not broker.running


@integration
def test_retained_messages_arrive_once_and_only_for_own_subscriptions(
    embedded_broker: EmbeddedUnderTest,
) -> None:
    with MqttProbe(embedded_broker).connected() as pub:
        pub.publish("edgebus/gw-1/status", b"online", retain=True)
    with MqttProbe(embedded_broker).connected() as sub:
        sub.subscribe("edgebus/+/status")
        got = sub.expect()
        assert (got.topic, got.payload, got.retain) == ("edgebus/gw-1/status", b"online", True)
        # amqtt 0.12.1 itself sends a connecting client the retained messages of
        # every client's subscriptions, and a new subscriber gets each twice
        # (broker/amqtt_fixes/retained_on_subscribe.py).
        with MqttProbe(embedded_broker).connected() as bystander:
            assert bystander.drain(0.5) == []
        with MqttProbe(embedded_broker).connected() as late:
            late.subscribe("edgebus/+/status")
            assert [(m.topic, m.retain) for m in late.drain(0.5)] == [
                ("edgebus/gw-1/status", True)]


@integration
def test_mqtt5_and_shared_subscriptions_are_not_served(
    embedded_broker: EmbeddedUnderTest,
) -> None:
    with MqttProbe(embedded_broker, protocol=mqtt.MQTTv5) as v5, \
            pytest.raises(AssertionError, match="no CONNACK"):
        v5.connect(timeout=2)
    with MqttProbe(embedded_broker).connected() as sub, \
            MqttProbe(embedded_broker).connected() as pub:
        assert not sub.subscribe("$share/g/edgebus/#")[0].is_failure
        sub.subscribe("edgebus/marker")
        pub.publish("edgebus/shared", b"lost")
        pub.publish("edgebus/marker", b"marker")
        assert [m.topic for m in sub.drain(0.5) if not m.retain] == ["edgebus/marker"]


@integration
def test_topic_acl(tmp_path: Path) -> None:
    admin, dev = Credentials("admin", "pa"), Credentials("cam-1", "pd")
    acl = {"admin": {"publish": ["#"], "subscribe": ["#"]},
           "cam-1": {"publish": ["edgebus/cam-1/#"], "subscribe": ["edgebus/cam-1/cmd/#"]}}
    with EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[admin, dev], acl=acl) as broker, \
            MqttProbe(("127.0.0.1", broker.port), "admin", "admin", "pa").connected() as watch, \
            MqttProbe(("127.0.0.1", broker.port), "cam", "cam-1", "pd").connected() as cam:
        watch.subscribe("edgebus/#")
        assert cam.subscribe("edgebus/cam-2/cmd/#")[0].is_failure
        assert not cam.subscribe("edgebus/cam-1/cmd/#")[0].is_failure
        cam.publish("edgebus/cam-2/metrics", b"spoofed")
        cam.publish("edgebus/cam-1/metrics", b"mine")
        got = watch.expect()
        assert (got.topic, got.payload) == ("edgebus/cam-1/metrics", b"mine")
        assert watch.drain(0.3) == []


@integration
def test_restored_subscriptions_answer_to_the_acl_of_the_restart(tmp_path: Path) -> None:
    admin, cam = Credentials("admin", "pa"), Credentials("cam-1", "pc")
    wide = {"admin": {"publish": ["#"], "subscribe": ["#"]},
            "cam-1": {"publish": ["edgebus/cam-1/#"], "subscribe": ["edgebus/cam-1/cmd/#",
                                                                    "edgebus/_sys/#"]}}
    narrow = {**wide, "cam-1": {"publish": ["edgebus/cam-1/#"],
                                "subscribe": ["edgebus/cam-1/cmd/#"]}}
    with EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[admin, cam], acl=wide) as broker, \
            MqttProbe(("127.0.0.1", broker.port), "cam", "cam-1", "pc",
                      clean_session=False).connected() as device:
        device.subscribe("edgebus/cam-1/cmd/#")
        device.subscribe("edgebus/_sys/#")
        port = broker.port
    with EmbeddedBroker(port=port, data_dir=tmp_path, credentials=[admin, cam], acl=narrow), \
            MqttProbe(("127.0.0.1", port), None, "admin", "pa").connected() as coordinator:
        coordinator.publish("edgebus/cam-1/cmd/ota", b"kept", qos=1)
        coordinator.publish("edgebus/_sys/raft/x", b"revoked", qos=1)
        with MqttProbe(("127.0.0.1", port), "cam", "cam-1", "pc", clean_session=False) as device:
            assert device.connect()[1]
            assert [m.payload for m in device.drain(0.5)] == [b"kept"]

@integration
def test_allow_anonymous_is_opt_in(tmp_path: Path) -> None:
    with EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[], allow_anonymous=True) as b, \
            MqttProbe(("127.0.0.1", b.port)) as anonymous:
        assert not anonymous.connect()[0].is_failure


@integration
def test_serve_runs_in_the_callers_event_loop(tmp_path: Path) -> None:
    broker = EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[Credentials("a", "b")])

    async def main() -> int:
        ready = asyncio.Event()
        task = asyncio.create_task(broker.serve(ready.set))
        await asyncio.wait_for(ready.wait(), 10)
        port = broker.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # MQTT 3.1.1 CONNECT, clean session, user "a" / password "b".
        payload = b"\x00\x04MQTT\x04\xc2\x00\x1e" + b"\x00\x01c" + b"\x00\x01a" + b"\x00\x01b"
        writer.write(bytes([0x10, len(payload)]) + payload)
        connack = await asyncio.wait_for(reader.readexactly(4), 10)
        writer.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return connack[3]

    assert asyncio.run(main()) == 0
    assert not broker.running


# -- both fixtures -----------------------------------------------------------------


@integration
def test_qos1_round_trip_on_every_broker(broker: RunningBroker) -> None:
    with MqttProbe(broker).connected() as sub, MqttProbe(broker).connected() as pub:
        sub.subscribe("edgebus/dev-1/state/#", 1)
        pub.publish("edgebus/dev-1/state/mode", b"auto", qos=1)
        got = sub.expect()
        assert (got.topic, got.payload, got.qos) == ("edgebus/dev-1/state/mode", b"auto", 1)
    assert broker.kind in ("mosquitto", "embedded")
    assert broker.speaks_mqtt5 == (broker.kind == "mosquitto")


# -- edge-broker run ---------------------------------------------------------------


def _edge_broker_run(data_dir: Path, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``edge-broker run`` in a child process, once it has printed its ready block."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "run", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(20):
        proc.kill()
        _out, err = proc.communicate(timeout=10)
        raise AssertionError(f"no ready block; output so far: {lines!r}; stderr: {err}")
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@integration
def test_edge_broker_run_prints_how_to_connect_and_what_it_guarantees(tmp_path: Path) -> None:
    port = free_port()
    proc, lines = _edge_broker_run(tmp_path / "data", "--port", str(port))
    try:
        creds = load_credentials(tmp_path / "data" / "credentials.json")
        out = "".join(lines)
        assert f"127.0.0.1:{port}" in out
        assert f"-u {creds.username} -P '{creds.password}'" in out
        assert "guarantees on the embedded broker" in out
        assert "need Mosquitto: MQTT 5, $share" in out and "edge-broker run --mosquitto" in out
        with MqttProbe(("127.0.0.1", port), None, creds.username, creds.password) as probe:
            assert not probe.connect()[0].is_failure
    finally:
        assert _stop(proc) == 0
    assert (tmp_path / "data" / STORE_FILE).exists()


@integration
def test_edge_broker_run_mosquitto_serves_the_same_user_with_mqtt5(tmp_path: Path) -> None:
    require_mosquitto()
    data = tmp_path / "data"
    creds = load_or_create_credentials(data)  # as an earlier embedded run left it
    port = free_port()
    proc, lines = _edge_broker_run(data, "--port", str(port), "--mosquitto")
    try:
        out = "".join(lines)
        assert f"Mosquitto MQTT 3.1.1, 5 broker listening on 127.0.0.1:{port}" in out
        assert "guarantees on Mosquitto" in out
        target = ("127.0.0.1", port)
        with MqttProbe(target, None, creds.username, creds.password,
                       protocol=mqtt.MQTTv5).connected() as sub, \
                MqttProbe(target, None, creds.username, creds.password).connected() as pub:
            sub.subscribe("edgebus/gw-1/#")
            pub.publish("edgebus/gw-1/status", b"online")
            assert sub.expect().payload == b"online"
        with MqttProbe(target, None, creds.username, "wrong") as refused:
            assert refused.connect()[0].is_failure
    finally:
        assert _stop(proc) == 0
    assert (data / "mosquitto" / "mosquitto.conf").exists()


def test_edge_broker_run_mosquitto_without_mosquitto_says_how_to_get_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from broker import local_mosquitto
    from broker.cli import main

    monkeypatch.setattr(local_mosquitto, "find_mosquitto", lambda: None)
    assert main(["run", "--port", "0", "--data-dir", str(tmp_path), "--mosquitto"]) == 1
    err = capsys.readouterr().err
    assert "mosquitto, which is not installed" in err and "apt-get install mosquitto" in err


def test_edge_broker_run_port_in_use_exits_1(tmp_path: Path) -> None:
    from broker.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["run", "--port", str(port), "--data-dir", str(tmp_path)]) == 1
