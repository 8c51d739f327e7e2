"""The audit log: records that validate themselves, the store's audit_events, and the trail end to end.

End to end runs the embedded broker with per-device users and the one ACL, a
coordinator-side :class:`coordinator.audit.AuditTrail` on a real session and
a real store: a wrong password, an ACL denial, a revocation, a dead letter
and an OTA refusal each end up once in ``audit_events`` and on
``{root}/_sys/audit/+``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.acl import BusAcl
from broker.audit import AuditLog
from broker.credentials import Credentials
from broker.embedded import EmbeddedBroker
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from coordinator.audit import AuditTrail
from coordinator.ingest import IngestBatch
from coordinator.store import SqlStore
from coordinator.store.records import DeadLetterRecord
from schemas.audit import AuditKind, AuditRecord
from schemas.errors import CodecError, UnsupportedVersion
from schemas.ota import OtaProgress, Phase
from tests.brokers import MqttProbe
from tests.bus_helpers import wait_until
from tests.json_schema import assert_conforms
from tests.test_store_support import StoreFactory, backend, open_backend

__all__ = ["backend", "open_backend"]

COORD = Credentials("coord", "coord-pw")
DEVICE = Credentials("cam-1", "pw-1")
OTHER = Credentials("cam-2", "pw-2")


def rec(event_id: str = "e1", time_ms: int = 1000, kind: str = "acl_denied",
        subject: str = "cam-1") -> AuditRecord:
    return AuditRecord(event_id, time_ms, AuditKind(kind), subject, "publish", "broker", "topic edgebus/x")


def test_a_record_round_trips_and_refuses_what_is_malformed() -> None:
    assert AuditRecord.decode(rec().encode()) == rec()
    doc = json.loads(rec().encode())
    assert doc == {"v": 1, "id": "e1", "time_ms": 1000, "kind": "acl_denied", "subject": "cam-1",
                   "reason": "publish", "source": "broker", "detail": "topic edgebus/x"}
    assert AuditRecord.decode(json.dumps({**doc, "later": 1}).encode()) == rec()  # unknown keys ignored
    with pytest.raises(UnsupportedVersion):
        AuditRecord.decode(json.dumps({**doc, "v": 2}).encode())
    for bad in ({"kind": "party"}, {"time_ms": -1}, {"time_ms": 1.5}, {"id": ""}, {"reason": "x" * 65},
                {"subject": "a\nb"}):
        with pytest.raises(CodecError):
            AuditRecord.decode(json.dumps({**doc, **bad}).encode())
    with pytest.raises(CodecError):
        AuditRecord.decode(b"{" * 9000)


def test_a_flood_of_one_event_becomes_one_record_a_second() -> None:
    now = [0]
    seen: list[AuditRecord] = []
    log = AuditLog("broker", sinks=[seen.append], clock_ms=lambda: now[0])
    for _ in range(1000):
        log.record(AuditKind.ACL_DENIED, "cam-1", "publish")
    log.record(AuditKind.ACL_DENIED, "cam-2", "publish")
    now[0] = 1000
    log.record(AuditKind.ACL_DENIED, "cam-1", "publish", "topic t")
    assert [(r.subject, r.detail) for r in seen] == [("cam-1", ""), ("cam-2", ""),
                                                     ("cam-1", "topic t [+999 similar]")]


def test_the_store_keeps_each_record_once_newest_first(open_backend: StoreFactory) -> None:
    store = open_backend()
    assert store.record_audit(rec("a", 1000))
    assert not store.record_audit(rec("a", 1000))  # the same id again: kept once
    assert store.record_audit(rec("b", 3000, "revocation", "cam-2"))
    assert store.record_audit(rec("c", 2000))
    assert [r.id for r in store.audit_events()] == ["b", "c", "a"]
    assert [r.id for r in store.audit_events(kind="acl_denied")] == ["c", "a"]
    assert [r.id for r in store.audit_events(subject="cam-2")] == ["b"]
    assert store.audit_events(limit=1) == [rec("b", 3000, "revocation", "cam-2")]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    acl = BusAcl(devices=(DEVICE.username, OTHER.username), coordinators=(COORD.username,))
    embedded = EmbeddedBroker(port=0, data_dir=tmp_path / "broker", credentials=[COORD, DEVICE, OTHER],
                              bus_acl=acl, persistence=False, audit=AuditLog("broker"))
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def test_security_events_are_stored_once_and_published(broker: EmbeddedBroker, tmp_path: Path) -> None:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    bus = BusSession(BusConfig(host="127.0.0.1", port=broker.port, username=COORD.username,
                               password=COORD.password, client_id="coordinator", protocol="3.1.1",
                               outbox_path=tmp_path / "outbox.db"))
    trail = AuditTrail(bus, store, source="coordinator")
    assert broker.audit is not None
    trail.attach(broker.audit)
    watcher = MqttProbe(("127.0.0.1", broker.port), "watcher", COORD.username, COORD.password).connected()
    try:
        bus.start()
        assert bus.wait_connected(10)
        watcher.subscribe("edgebus/_sys/audit/+")
        # A wrong password, an ACL denial, a revocation.
        wrong = MqttProbe(("127.0.0.1", broker.port), "intruder", "cam-1", "guess")
        assert wrong.connect()[0].is_failure
        wrong.close()
        target = ("127.0.0.1", broker.port)
        with MqttProbe(target, "cam-2", OTHER.username, OTHER.password).connected() as dev:
            dev.publish("edgebus/cam-1/metrics", b"forged")
            # An OTA refusal, retained: seen twice (again on a new subscription), stored once.
            refused = OtaProgress(update_id="u-9", phase=Phase.REFUSED, version="2.0", reason="revoked_key",
                                  detail="signed by a revoked key", time_ms=5)
            dev.publish("edgebus/cam-2/state/ota", refused.to_json_bytes(), retain=True)
        broker.revoke_device("cam-2", "quarantined")
        # A dead letter, handed over by ingest.
        trail(IngestBatch(dead_letters=[DeadLetterRecord(7, "edgebus/cam-1/metrics", "too_many_names", "x",
                                                         b"")] * 3))
        trail.quarantine("cam-1", "pbft_quarantine")
        wanted = {("auth_failure", "cam-1", "bad_password"), ("acl_denied", "cam-2", "publish"),
                  ("ota_refused", "cam-2", "revoked_key"), ("revocation", "cam-2", "quarantined"),
                  ("dead_letter", "cam-1", "too_many_names"), ("quarantine", "cam-1", "pbft_quarantine")}

        def stored() -> set[tuple[str, str, str]]:
            return {(str(r.kind), r.subject, r.reason) for r in store.audit_events()}

        assert wait_until(lambda: wanted <= stored()), stored()
        published: set[tuple[str, str, str]] = set()
        while not wanted <= published:
            msg = watcher.expect()
            record = AuditRecord.decode(msg.payload)
            assert_conforms(msg.payload, "audit-event")
            assert msg.topic == f"edgebus/_sys/audit/{record.source}"
            published.add((str(record.kind), record.subject, record.reason))
        dead = store.audit_events(kind="dead_letter")
        assert len(dead) == 1 and dead[0].detail == "3 message(s) dead-lettered"

        # The retained OTA state again (as a restarted coordinator gets it): still one record.
        AuditTrail(bus, store, source="coordinator")._on_ota(
            ReceivedMessage("edgebus/cam-2/state/ota", refused.to_json_bytes(), 1, True))
        assert len(store.audit_events(kind="ota_refused")) == 1
        ids = [r.id for r in store.audit_events()]
        assert len(ids) == len(set(ids))
    finally:
        watcher.close()
        bus.stop(flush_timeout=1)
        store.close()



def test_mosquittos_refusals_are_read_from_its_log(tmp_path: Path) -> None:
    import os

    from broker.mosquitto_config import MosquittoSite
    from broker.mosquitto_log import MosquittoLogAudit
    from tests.brokers import MosquittoUnderTest, free_port

    mosquitto = MosquittoUnderTest(tmp_path, MosquittoSite(
        listener_host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data", devices=[DEVICE],
        coordinators=[COORD], run_as_user="root" if os.geteuid() == 0 else None))
    with mosquitto.files.conf.open("a") as conf:
        conf.write("log_type all\n")  # "Denied PUBLISH" is a debug line
    mosquitto.start()
    seen: list[AuditRecord] = []
    follower = MosquittoLogAudit(mosquitto.log_path, AuditLog("mosquitto", sinks=[seen.append]))
    try:
        target = (mosquitto.host, mosquitto.port)
        wrong = MqttProbe(target, "intruder", "cam-1", "guess")
        assert wrong.connect()[0].is_failure
        wrong.close()
        with MqttProbe(target, "cam-1", DEVICE.username, DEVICE.password).connected() as dev:
            dev.publish("edgebus/cam-2/metrics", b"forged")
        wanted = {("auth_failure", "not_authorised"), ("acl_denied", "publish")}
        assert wait_until(lambda: follower.poll() >= 0 and wanted <= {(str(r.kind), r.reason) for r in seen})
    finally:
        mosquitto.stop()
    denied = next(r for r in seen if r.kind is AuditKind.ACL_DENIED)
    assert (denied.subject, denied.detail) == ("cam-1", "topic edgebus/cam-2/metrics")
    refused = next(r for r in seen if r.kind is AuditKind.AUTH_FAILURE)
    assert refused.subject.startswith("127.0.0.1:")


def test_the_coordinator_config_names_mosquittos_log() -> None:
    from coordinator.config import CoordinatorConfig
    from schemas.errors import ConfigError

    log = "/var/log/mosquitto/mosquitto.log"
    assert CoordinatorConfig.from_mapping({"mosquitto_log": log}).mosquitto_log == Path(log)
    assert CoordinatorConfig.from_mapping({}).mosquitto_log is None
    with pytest.raises(ConfigError, match="mosquitto_log"):
        CoordinatorConfig.from_mapping({"mosquitto_log": 3})


def test_edge_coordinator_audit_lists_the_stored_records(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from coordinator.cli import main

    store = SqlStore.open(data_dir=tmp_path)
    store.migrate()
    store.record_audit(rec("a", 1000))
    store.record_audit(rec("b", 2000, "revocation", "cam-2"))
    store.close()
    assert main(["audit", "--data-dir", str(tmp_path), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [AuditRecord.decode(line.encode()).id for line in lines] == ["b", "a"]
    assert main(["audit", "--data-dir", str(tmp_path), "--kind", "revocation"]) == 0
    out = capsys.readouterr().out
    assert "revocation" in out and "cam-2" in out and "acl_denied" not in out


def test_audit_records_go_after_audit_days(open_backend: StoreFactory) -> None:
    from coordinator.store import RetentionConfig
    from coordinator.store.config import DAY_MS

    store = open_backend(retention=RetentionConfig(audit_days=10))
    store.record_audit(rec("old", 1000))
    store.record_audit(rec("new", 1000 + 5 * DAY_MS))
    assert store.apply_retention(1000 + 12 * DAY_MS).audit_events_deleted == 1
    assert [r.id for r in store.audit_events()] == ["new"]
    assert RetentionConfig.from_mapping({"audit_days": 0}).audit_days == 0  # 0: kept for good


def test_a_device_flooding_ota_refusals_costs_one_record_a_second(tmp_path: Path) -> None:
    store = SqlStore.open(data_dir=tmp_path)
    store.migrate()
    bus = BusSession(BusConfig(port=1, client_id="coordinator", outbox_path=tmp_path / "outbox.db"))
    trail = AuditTrail(bus, store, source="coordinator")  # never connected: what it publishes queues
    try:
        for i in range(200):
            refused = OtaProgress(update_id=f"u-{i}", phase=Phase.REFUSED, version="1", reason=f"r{i}")
            trail._on_ota(ReceivedMessage("edgebus/cam-1/state/ota", refused.to_json_bytes(), 1, True))
        assert len(store.audit_events(kind="ota_refused")) == 1
        assert trail.log.suppressed == 199
    finally:
        store.close()
        bus.outbox.close()
