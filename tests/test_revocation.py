"""Revoking a device's login takes effect at once, on Mosquitto and on the embedded broker.

Both run the per-device configuration (one user per device, the one ACL).
The revoked device's live connection ends, it cannot log in again, the other
device keeps its connection and its lanes, and the broker is never restarted
(Mosquitto's pid is the same before and after: it reloaded on SIGHUP).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.acl import BusAcl
from broker.audit import AuditLog
from broker.credentials import Credentials
from broker.embedded import EmbeddedBroker
from broker.mosquitto_config import MosquittoSite
from broker.revocation import (
    DeviceRevoker,
    FileRevoker,
    Revocation,
    RevokedDevices,
    drop_acl_user,
    drop_csv_device,
    drop_password_user,
)
from schemas.audit import AuditKind, AuditRecord
from tests.brokers import MosquittoUnderTest, MqttProbe, free_port

COORD = Credentials("coord", "coord-pw")
REVOKED = Credentials("cam-1", "pw-1")
BYSTANDER = Credentials("cam-2", "pw-2")


@dataclass
class Fleet:
    kind: str
    host: str
    port: int
    revoker: DeviceRevoker
    audit: list[AuditRecord]
    broker_pid: Callable[[], int | None]

    def probe(self, creds: Credentials, client_id: str) -> MqttProbe:
        return MqttProbe((self.host, self.port), client_id, creds.username, creds.password)


@pytest.fixture(params=["mosquitto", "embedded"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    records: list[AuditRecord] = []
    audit = AuditLog("broker", sinks=[records.append])
    if request.param == "mosquitto":
        mosquitto = MosquittoUnderTest(tmp_path / "site", MosquittoSite(
            listener_host="127.0.0.1", port=free_port(), data_dir=tmp_path / "site" / "data",
            devices=[REVOKED, BYSTANDER], coordinators=[COORD],
            run_as_user="root" if os.geteuid() == 0 else None))
        mosquitto.start()
        revoker = FileRevoker(tmp_path / "site", pid=mosquitto.pid, audit=audit)
        try:
            yield Fleet("mosquitto", mosquitto.host, mosquitto.port, revoker, records, lambda: mosquitto.pid)
        finally:
            mosquitto.stop()
    else:
        acl = BusAcl(devices=(REVOKED.username, BYSTANDER.username), coordinators=(COORD.username,))
        embedded = EmbeddedBroker(port=0, data_dir=tmp_path / "embedded",
                                  credentials=[COORD, REVOKED, BYSTANDER], bus_acl=acl,
                                  persistence=False, audit=audit)
        embedded.start()
        try:
            yield Fleet("embedded", "127.0.0.1", embedded.port, embedded, records, os.getpid)
        finally:
            embedded.stop()


def _watch_disconnect(probe: MqttProbe) -> threading.Event:
    gone = threading.Event()

    def on_disconnect(*args: Any) -> None:
        gone.set()

    probe.client.on_disconnect = on_disconnect
    return gone


def test_a_revoked_device_is_cut_off_at_once_and_the_others_are_not(fleet: Fleet) -> None:
    pid_before = fleet.broker_pid()
    observer = fleet.probe(COORD, "observer").connected()
    revoked = fleet.probe(REVOKED, "cam-1").connected()
    bystander = fleet.probe(BYSTANDER, "cam-2").connected()
    try:
        observer.subscribe("edgebus/#")
        revoked_gone, bystander_gone = _watch_disconnect(revoked), _watch_disconnect(bystander)
        revoked.publish("edgebus/cam-1/metrics", b"before")
        assert observer.expect().topic == "edgebus/cam-1/metrics"

        heard: list[Revocation] = []
        fleet.revoker.on_revoked(heard.append)
        entry = fleet.revoker.revoke_device("cam-1", "quarantined")

        assert entry.device == "cam-1" and entry.reason == "quarantined" and heard == [entry]
        assert revoked_gone.wait(10), "the revoked device's connection is still open"
        revoked.close()
        again = fleet.probe(REVOKED, "cam-1-again")
        rc, _ = again.connect()
        again.close()
        assert rc.is_failure, f"the revoked device logged in again: {rc}"
        bystander.publish("edgebus/cam-2/metrics", b"after")
        assert observer.expect().topic == "edgebus/cam-2/metrics"
        assert not bystander_gone.is_set()
        assert fleet.broker_pid() == pid_before
    finally:
        for probe in (bystander, revoked, observer):
            probe.close()
    kinds = [(r.kind, r.subject, r.reason) for r in fleet.audit]
    assert (AuditKind.REVOCATION, "cam-1", "quarantined") in kinds
    if fleet.kind == "embedded":  # Mosquitto's refusals are in its log, not seen in-process
        assert (AuditKind.AUTH_FAILURE, "cam-1", "revoked") in kinds


def test_a_revocation_survives_a_restart_of_the_embedded_broker(tmp_path: Path) -> None:
    acl = BusAcl(devices=(REVOKED.username,), coordinators=(COORD.username,))
    broker = EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[COORD, REVOKED], bus_acl=acl,
                            persistence=False)
    broker.revoke_device("cam-1", "stolen")
    assert [c.username for c in broker.credentials] == ["coord"]
    again = EmbeddedBroker(port=0, data_dir=tmp_path, credentials=[COORD, REVOKED], bus_acl=acl,
                           persistence=False)
    assert [c.username for c in again.credentials] == ["coord"]
    assert RevokedDevices(tmp_path / "revoked-devices.json").get("cam-1").reason == "stolen"  # type: ignore[union-attr]


def test_the_generated_files_lose_exactly_the_revoked_device() -> None:
    passwd = "coord:$7$a\ncam-1:$7$b\ncam-10:$7$c\n"
    assert drop_password_user(passwd, "cam-1") == "coord:$7$a\ncam-10:$7$c\n"
    acl = ("pattern write edgebus/%u/#\n\nuser cam-1\ntopic read homeassistant/status\n"
           "user cam-10\ntopic read homeassistant/status\n\nuser coord\ntopic readwrite edgebus/#\n")
    assert drop_acl_user(acl, "cam-1") == ("pattern write edgebus/%u/#\n\nuser cam-10\n"
                                           "topic read homeassistant/status\n\nuser coord\n"
                                           "topic readwrite edgebus/#\n")
    csv = "device_id,password\ncam-1,x\ncam-2,y\n"
    assert drop_csv_device(csv, "cam-1") == "device_id,password\ncam-2,y\n"


def test_edge_broker_revoke_cuts_a_device_off_a_running_edge_broker_run(tmp_path: Path) -> None:
    from broker.cli import main
    from broker.credentials import load_credentials
    from broker.mosquitto_config import read_credentials_csv
    from tests.test_embedded_broker import _edge_broker_run, _stop

    devices = tmp_path / "devices.csv"
    devices.write_text("cam-1,pw-1\ncam-2,pw-2\n")
    data, port = tmp_path / "data", free_port()
    proc, _lines = _edge_broker_run(data, "--port", str(port), "--devices", str(devices))
    try:
        coord = load_credentials(data / "credentials.json")
        observer = MqttProbe(("127.0.0.1", port), "observer", coord.username, coord.password).connected()
        device = MqttProbe(("127.0.0.1", port), "cam-1", "cam-1", "pw-1").connected()
        gone = _watch_disconnect(device)
        observer.subscribe("edgebus/#")

        assert main(["revoke", "cam-1", "--data-dir", str(data), "--pid", str(proc.pid),
                     "--reason", "stolen"]) == 0

        assert gone.wait(10), "edge-broker run kept the revoked device's connection"
        device.close()
        again = MqttProbe(("127.0.0.1", port), "cam-1-again", "cam-1", "pw-1")
        assert again.connect()[0].is_failure
        again.close()
        with MqttProbe(("127.0.0.1", port), "cam-2", "cam-2", "pw-2").connected() as other:
            other.publish("edgebus/cam-2/metrics", b"x")
            assert observer.expect().topic == "edgebus/cam-2/metrics"
        observer.close()
        assert proc.poll() is None
    finally:
        assert _stop(proc) == 0
    assert "cam-1" not in read_credentials_csv(data / "device-credentials.csv")
    # Restarting with the same devices file keeps the device out.
    proc, _lines = _edge_broker_run(data, "--port", str(port), "--devices", str(devices))
    try:
        again = MqttProbe(("127.0.0.1", port), "cam-1-restart", "cam-1", "pw-1")
        assert again.connect()[0].is_failure
        again.close()
    finally:
        assert _stop(proc) == 0


def test_regenerating_a_mosquitto_site_leaves_a_revoked_device_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from broker.cli import main

    devices = tmp_path / "devices.csv"
    devices.write_text("cam-1\ncam-2\n")
    site = tmp_path / "site"
    assert main(["mosquitto-config", "--devices", str(devices), "--out", str(site)]) == 0
    assert main(["revoke", "cam-1", "--site", str(site), "--reason", "stolen", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert json.loads(out)["device"] == "cam-1" and json.loads(out)["reload_sent"] is False
    users = {line.split(":")[0] for line in (site / "passwd").read_text().splitlines()}
    assert users == {"coordinator", "cam-2"}
    assert "user cam-1\n" not in (site / "acl").read_text() and "user cam-2\n" in (site / "acl").read_text()

    assert main(["mosquitto-config", "--devices", str(devices), "--out", str(site)]) == 0
    assert "cam-1 is revoked" in capsys.readouterr().err
    users = {line.split(":")[0] for line in (site / "passwd").read_text().splitlines()}
    assert users == {"coordinator", "cam-2"}


def test_a_pbft_quarantine_revokes_the_liars_login(fleet: Fleet) -> None:
    """``edge-bus bft serve --revoke-site``: the quarantine hook takes the proven liar off the broker."""
    from typing import cast

    from broker.bft.hooks import revocation_hook
    from protocols.pbft import Evidence

    liar = fleet.probe(REVOKED, "cam-1").connected()
    try:
        gone = _watch_disconnect(liar)
        hook = revocation_hook(fleet.revoker, "fleet")
        hook("cam-1", cast(Evidence, None))  # the hook needs only who; the replica publishes the proof
        assert gone.wait(10), "the liar's connection is still open"
    finally:
        liar.close()
    again = fleet.probe(REVOKED, "cam-1-again")
    rc, _ = again.connect()
    again.close()
    assert rc.is_failure, f"the liar logged in again: {rc}"
    assert (AuditKind.REVOCATION, "cam-1", "PBFT equivocation proof, group fleet") in [
        (r.kind, r.subject, r.reason) for r in fleet.audit]
