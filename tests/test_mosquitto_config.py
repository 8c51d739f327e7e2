"""The generated Mosquitto site configuration, checked on paper and by a real Mosquitto."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.cli import main
from broker.credentials import Credentials, load_credentials
from broker.mosquitto_config import (
    PBKDF2_ITERATIONS,
    MosquittoSite,
    read_credentials_csv,
    read_devices_csv,
    verify_mosquitto_password,
    write_credentials_csv,
)
from schemas.errors import ConfigError
from tests.brokers import MosquittoUnderTest, MqttProbe, free_port

COORD = Credentials("coord", "coord-pw")
DEVICES = [Credentials("cam-1", "pw-1"), Credentials("cam-2", "pw-2"),
           Credentials("gw.3", "pw-3")]


def make_site(tmp_path: Path, **overrides: object) -> MosquittoSite:
    fields: dict[str, object] = {
        "listener_host": "127.0.0.1", "port": 1883, "data_dir": tmp_path / "data",
        "devices": DEVICES, "coordinators": [COORD],
    }
    fields.update(overrides)
    return MosquittoSite(**fields)  # type: ignore[arg-type]


# -- on paper ----------------------------------------------------------------------


def test_password_entries_have_mosquitto_passwd_shape(tmp_path: Path) -> None:
    text = make_site(tmp_path).render_passwd()
    entries = dict(line.split(":", 1) for line in text.splitlines())
    assert list(entries) == ["coord", "cam-1", "cam-2", "gw.3"]
    for user, password in [("coord", "coord-pw"), ("cam-1", "pw-1")]:
        entry = entries[user]
        _, kind, iterations, salt, digest = entry.split("$")
        assert (kind, int(iterations)) == ("7", PBKDF2_ITERATIONS)
        assert (len(salt), len(digest)) == (16, 88)  # 12 and 64 bytes in base64
        assert verify_mosquitto_password(password, entry)
        assert not verify_mosquitto_password(password + "x", entry)
    assert entries["cam-1"] != make_site(tmp_path).render_passwd().splitlines()[1]  # fresh salt


def test_verifies_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "alice", "s3cret"], check=True, timeout=30)
    user, entry = path.read_text().strip().split(":", 1)
    assert user == "alice" and entry.startswith(f"$7${PBKDF2_ITERATIONS}$")
    assert verify_mosquitto_password("s3cret", entry)
    assert not verify_mosquitto_password("secret", entry)


def test_conf_raises_queue_limits_and_persists(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    files = site.write(tmp_path / "site")
    conf = files.conf.read_text().splitlines()
    for line in ["per_listener_settings false", "allow_anonymous false",
                 "listener 1883 127.0.0.1", "persistence true", "max_queued_messages 100000",
                 f"max_queued_bytes {256 * 1024 * 1024}", "max_inflight_messages 100",
                 "autosave_interval 60", f"password_file {files.passwd}",
                 f"acl_file {files.acl}", f"persistence_location {files.data_dir}/"]:
        assert line in conf
    assert conf.index("per_listener_settings false") < conf.index("listener 1883 127.0.0.1")
    assert stat.S_IMODE(files.passwd.stat().st_mode) == 0o600
    assert files.data_dir.is_dir()


def test_acl_confines_devices(tmp_path: Path) -> None:
    acl = make_site(tmp_path).render_acl().splitlines()
    for line in ["pattern write edgebus/%u/#", "pattern read edgebus/%u/cmd/#",
                 "pattern write homeassistant/+/%u/#", "user cam-1",
                 "topic read homeassistant/status", "pattern write edgebus/_sys/lock/+/req/%u",
                 "pattern read edgebus/_sys/lock/+/reply/%u/#", "pattern write edgebus/_sys/tx/+/from/%u",
                 "pattern read edgebus/_sys/tx/+/to/%u",
                 "pattern read edgebus/_sys/bft/+/to/%u", "pattern write edgebus/_sys/bft/+/status/%u",
                 "pattern write edgebus/_sys/bft/+/deadletter/%u",
                 "pattern write edgebus/_sys/bft/+/quarantined/%u", "topic write edgebus/_sys/bft/+/to/+",
                 "topic write edgebus/_sys/bft/+/evidence", "topic read edgebus/_sys/bft/+/decided",
                 "user coord", "topic readwrite edgebus/#", "topic readwrite homeassistant/#"]:
        assert line in acl
    # Devices have only their own lanes in the coordination protocols (issue 17, break 1).
    assert not [line for line in acl if "_sys/#" in line or "_sys/raft" in line]
    # gw.3 is node gw_3 in Home Assistant.
    user = acl.index("user gw.3")
    assert "topic write homeassistant/+/gw_3/#" in acl[user:user + 5]
    # Nothing but coordinators may read everything.
    assert acl.count("topic readwrite edgebus/#") == 1


@pytest.mark.parametrize(("overrides", "message"), [
    ({"devices": [Credentials("_sys", "p")]}, "device id '_sys'"),
    ({"devices": [Credentials("a/b", "p")]}, "device id 'a/b'"),
    ({"devices": [Credentials("coord", "p")]}, "'coord' is listed twice"),
    ({"devices": [Credentials("gw.1", "p"), Credentials("gw_1", "q")]}, "same Home Assistant"),
    ({"coordinators": []}, "at least one coordinator"),
    ({"root": "edge+bus"}, "root"),
    ({"port": 0}, "port must be"),
    ({"max_queued_messages": 0}, "max_queued_messages"),
    ({"persistent_client_expiration": "2 weeks"}, "persistent_client_expiration"),
])
def test_site_validation_names_the_problem(tmp_path: Path, overrides: dict[str, object],
                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_site(tmp_path, **overrides)


def test_devices_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "devices.csv"
    csv_path.write_text("device_id,password\n# the yard\ncam-1,given\n\ncam-2\n gw.3 , \n")
    roster = read_devices_csv(csv_path)
    assert [c.username for c in roster.devices] == ["cam-1", "cam-2", "gw.3"]
    assert roster.devices[0].password == "given"
    assert roster.generated == ("cam-2", "gw.3")
    out = tmp_path / "creds.csv"
    write_credentials_csv(out, roster.devices)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert read_credentials_csv(out) == {c.username: c.password for c in roster.devices}
    again = read_devices_csv(csv_path, previous=out)
    assert again.devices == roster.devices
    assert again.reused == ("cam-2", "gw.3") and again.generated == ()


@pytest.mark.parametrize(("text", "message"), [
    ("cam-1\ncam-1\n", "line 2: device 'cam-1' already listed on line 1"),
    ("cam-1\nbad id\n", "line 2: device id 'bad id'"),
    ("cam-1,pw,extra\n", "line 1: expected device_id"),
    ("# nothing\n", "lists no devices"),
])
def test_devices_csv_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_devices_csv(path)


# -- a real Mosquitto ---------------------------------------------------------------


@pytest.fixture
def site_broker(tmp_path: Path) -> Iterator[MosquittoUnderTest]:
    site = make_site(tmp_path, port=free_port())
    running = MosquittoUnderTest(tmp_path / "site", site)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def probe(broker: MosquittoUnderTest, creds: Credentials, client_id: str | None = None,
          **kwargs: bool) -> MqttProbe:
    return MqttProbe((broker.host, broker.port), client_id or f"t-{creds.username}",
                     creds.username, creds.password, **kwargs)


@pytest.mark.integration
def test_devices_log_in_with_generated_entries(site_broker: MosquittoUnderTest) -> None:
    for creds in [*DEVICES, COORD]:
        with probe(site_broker, creds) as p:
            rc, _ = p.connect()
            assert not rc.is_failure, (creds.username, rc)
    for user, password in [("cam-1", "pw-2"), ("nobody", "pw-1")]:
        with probe(site_broker, Credentials(user, password)) as p:
            rc, _ = p.connect()
            assert rc.is_failure and rc.getName() == "Not authorized"
    with MqttProbe((site_broker.host, site_broker.port), "anon") as p:
        assert p.connect()[0].is_failure


@pytest.mark.integration
def test_device_writes_only_its_own_topics(site_broker: MosquittoUnderTest) -> None:
    with probe(site_broker, COORD).connected() as coord, \
            probe(site_broker, DEVICES[0]).connected() as cam:
        coord.subscribe("edgebus/#")
        coord.subscribe("homeassistant/#")
        cam.publish("edgebus/cam-1/metrics", b"mine")
        got = coord.expect()
        assert (got.topic, got.payload) == ("edgebus/cam-1/metrics", b"mine")
        # Denied publishes are acknowledged and dropped; the marker that follows
        # on the same connection proves the spoofs were not delivered.
        cam.publish("edgebus/cam-2/metrics", b"spoofed")
        cam.publish("edgebus/_anomaly/cam-2/temp", b"spoofed")
        cam.publish("homeassistant/sensor/cam-2/temp/config", b"spoofed")
        cam.publish("homeassistant/sensor/cam-1/temp/config", b"{}")
        cam.publish("edgebus/_sys/raft/g/vote", b"spoofed")
        cam.publish("edgebus/_sys/lock/g/req/cam-1", b"its own lane")
        cam.publish("edgebus/cam-1/status", b"marker")
        topics = [coord.expect().topic for _ in range(3)]
        assert topics == ["homeassistant/sensor/cam-1/temp/config", "edgebus/_sys/lock/g/req/cam-1",
                          "edgebus/cam-1/status"]
        assert coord.drain(0.2) == []


@pytest.mark.integration
def test_device_reads_only_its_own_commands(site_broker: MosquittoUnderTest) -> None:
    with probe(site_broker, COORD).connected() as coord, \
            probe(site_broker, DEVICES[0]).connected() as cam:
        cam.subscribe("edgebus/cam-2/cmd/#")  # Mosquitto grants it, then filters delivery
        cam.subscribe("edgebus/cam-1/cmd/#")
        cam.subscribe("homeassistant/status")
        cam.subscribe("edgebus/cam-2/metrics")
        coord.publish("edgebus/cam-2/cmd/assign", b"not for cam-1")
        coord.publish("edgebus/cam-2/metrics", b"not for cam-1")
        coord.publish("homeassistant/status", b"online")
        coord.publish("edgebus/cam-1/cmd/assign", b"for cam-1")
        got = [(m.topic, m.payload) for m in (cam.expect(), cam.expect())]
        assert got == [("homeassistant/status", b"online"),
                       ("edgebus/cam-1/cmd/assign", b"for cam-1")]
        assert cam.drain(0.2) == []


@pytest.mark.integration
def test_home_assistant_node_of_a_dotted_device(site_broker: MosquittoUnderTest) -> None:
    with probe(site_broker, COORD).connected() as coord, \
            probe(site_broker, DEVICES[2]).connected() as gw:
        coord.subscribe("homeassistant/#")
        gw.publish("homeassistant/sensor/gw.3/x/config", b"bad node id")  # allowed by %u
        gw.publish("homeassistant/sensor/gw_3/x/config", b"{}")
        assert [coord.expect().topic for _ in range(2)] == [
            "homeassistant/sensor/gw.3/x/config", "homeassistant/sensor/gw_3/x/config"]


@pytest.mark.integration
def test_slow_subscriber_loses_nothing_beyond_mosquittos_default(
    site_broker: MosquittoUnderTest,
) -> None:
    count = 1500  # Mosquitto's default max_queued_messages (1000) would drop 500
    with probe(site_broker, COORD, "slow", clean_session=False).connected() as slow:
        slow.subscribe("edgebus/cam-1/metrics", 1)
    with probe(site_broker, DEVICES[0]).connected() as cam:
        infos = [cam.client.publish("edgebus/cam-1/metrics", str(i).encode(), qos=1)
                 for i in range(count)]
        for info in infos:
            info.wait_for_publish(30)
    with probe(site_broker, COORD, "slow", clean_session=False) as slow:
        _, present = slow.connect()
        assert present
        got = [int(slow.expect(timeout=30).payload) for _ in range(count)]
    assert got == list(range(count))


@pytest.mark.integration
def test_queued_messages_survive_a_restart(mosquitto_broker: MosquittoUnderTest) -> None:
    with MqttProbe(mosquitto_broker, "durable", clean_session=False).connected() as sub:
        sub.subscribe("edgebus/gw/metrics", 1)
    with MqttProbe(mosquitto_broker).connected() as pub:
        pub.publish("edgebus/gw/metrics", b"kept", qos=1)
    port = mosquitto_broker.port
    mosquitto_broker.stop()
    mosquitto_broker.start()
    assert mosquitto_broker.port == port
    with MqttProbe(mosquitto_broker, "durable", clean_session=False) as sub:
        _, present = sub.connect()
        assert present
        assert sub.expect().payload == b"kept"


# -- edge-broker mosquitto-config ---------------------------------------------------


def test_cli_writes_a_site_and_keeps_passwords(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("cam-1\ncam-2,chosen\n")
    out = tmp_path / "site"
    assert main(["mosquitto-config", "--devices", str(devices), "--out", str(out),
                 "--port", "18830", "--root", "yard"]) == 0
    printed = capsys.readouterr().out
    assert f"mosquitto -c {out / 'mosquitto.conf'}" in printed
    assert "-t 'yard/#'" in printed
    first = read_credentials_csv(out / "device-credentials.csv")
    assert first["cam-2"] == "chosen" and len(first["cam-1"]) >= 32
    coord = load_credentials(out / "coordinator.credentials.json")
    assert "listener 18830 0.0.0.0" in (out / "mosquitto.conf").read_text()
    assert "pattern write yard/%u/#" in (out / "acl").read_text()

    assert main(["mosquitto-config", "--devices", str(devices), "--out", str(out),
                 "--json"]) == 0
    assert read_credentials_csv(out / "device-credentials.csv") == first
    assert load_credentials(out / "coordinator.credentials.json") == coord


def test_cli_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("cam-1\ncam 2\n")
    assert main(["mosquitto-config", "--devices", str(devices), "--out",
                 str(tmp_path / "site")]) == 2
    assert "line 2" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()
    assert main(["mosquitto-config", "--out", str(tmp_path)]) == 2
    assert main(["--help"]) == 0
    assert "mosquitto-config" in capsys.readouterr().out
