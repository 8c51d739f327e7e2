"""Over-the-air updates end to end: `edge-flash ota publish` against real agent processes.

Real Mosquitto, real agents (``python -m agents.cli run``) started from an A/B
prefix by a test "systemd" (tests/ota_helpers.py: ``edgebus-slot prestart``,
then ``{prefix}/current/bin/edge-agent``, restarted on failure), and test
agent bundles whose ``install.sh`` fills the inactive slot with the same agent
marked ``VERSION`` 2.0. Nothing is mocked but the bundle's contents.
"""

from __future__ import annotations

import io
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware_tools.agent_config import parse_broker_url
from firmware_tools.keys import init_keys
from firmware_tools.ota.publish import PublishRequest, publish, publisher_session
from firmware_tools.ota.report import PublishReport
from firmware_tools.ota.rollout import OtaPublisher
from firmware_tools.ota_artifact import Artifact, build_artifact
from protocols.ota.rollout import RolloutPolicy
from schemas.birth import Birth
from schemas.messages import decode_record
from schemas.ota import OtaProgress, Phase, SignedManifest
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import observer, wait_until
from tests.ota_helpers import TestSystemd, make_agent_bundle, make_prefix, ota_agent_toml

pytestmark = pytest.mark.integration

HEALTH_WINDOW = 2.0
TIMEOUT = 45.0  # seconds of silence before the server gives a device up
CHUNK = 16 * 1024
WAIT = 60.0


@dataclass
class Device:
    name: str
    home: Path
    systemd: TestSystemd

    @property
    def prefix(self) -> Path:
        return self.systemd.prefix

    def slot(self) -> str:
        return self.systemd.current_slot()


class Fleet:
    """Agents under test-systemd on one broker, and a watcher of their births and OTA state."""

    def __init__(self, broker: MosquittoUnderTest, tmp_path: Path) -> None:
        self.broker = broker
        self.tmp_path = tmp_path
        self.keys = tmp_path / "keys"
        init_keys(self.keys)
        self.devices: dict[str, Device] = {}
        self.watch, self.inbox = observer(broker, "edgebus/+/#", name="ota-e2e-watcher")

    def add(self, name: str, groups: tuple[str, ...] = ("lobby",)) -> Device:
        home = self.tmp_path / name
        home.mkdir()
        prefix = make_prefix(home / "opt")
        config = ota_agent_toml(self.broker, home, name, prefix=prefix,
                                trusted_keys=self.keys / "trusted_keys.json", groups=groups,
                                health_window=HEALTH_WINDOW)
        device = Device(name, home, TestSystemd(prefix, home / "agent-data", config).start())
        self.devices[name] = device
        return device

    def wait_ready(self) -> None:
        """Every agent connected and announced the ota capability."""
        for name, device in self.devices.items():
            ok = self.inbox.wait_for(lambda _m, n=name: "ota" in getattr(self.birth(n), "capabilities", ()),
                                     WAIT)
            assert ok, f"{name} never announced ota:\n{device.systemd.log_tail()}"

    def birth(self, device: str) -> Birth | None:
        payloads = self.inbox.payloads(f"edgebus/{device}/birth")
        if not payloads:
            return None
        record = decode_record(payloads[-1])
        return record if isinstance(record, Birth) else None

    def progress(self, device: str) -> list[OtaProgress]:
        return [OtaProgress.from_json_bytes(p) for p in self.inbox.payloads(f"edgebus/{device}/state/ota")]

    def request(self, artifact: Path, **kw: object) -> PublishRequest:
        target = parse_broker_url(f"mqtt://{self.broker.host}:{self.broker.port}", self.broker.username,
                                  self.broker.password)
        options: dict[str, object] = {"artifact": artifact, "kind": "agent", "version": "2.0",
                                      "keys_dir": self.keys, "broker": target, "chunk_size": CHUNK,
                                      "timeout": TIMEOUT, "health_window": HEALTH_WINDOW, "settle": 2.0}
        options.update(kw)
        return PublishRequest(**options)  # type: ignore[arg-type]

    def publish(self, artifact: Path, hook: Callable[[str, int, bytes], bytes] | None = None,
                **kw: object) -> tuple[int, PublishReport, str]:
        out = io.StringIO()
        code, report = publish(self.request(artifact, **kw), out=out, frame_hook=hook)
        assert report is not None
        return code, report, out.getvalue() + "\n" + self.logs()

    def bundle(self, name: str, **kw: object) -> Path:
        return make_agent_bundle(self.tmp_path / name, self.keys, **kw)  # type: ignore[arg-type]

    def logs(self) -> str:
        return "\n".join(f"=== {n}\n{d.systemd.log_tail()}" for n, d in self.devices.items())

    def close(self) -> None:
        for device in self.devices.values():
            device.systemd.stop()
        self.watch.stop(flush_timeout=0)


@pytest.fixture
def fleet(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(mosquitto_broker, tmp_path)
    try:
        yield running
    finally:
        running.close()


def _last_phase(fleet: Fleet, device: str, update_id: str) -> OtaProgress | None:
    mine = [p for p in fleet.progress(device) if p.update_id == update_id]
    return mine[-1] if mine else None


def _reaches(fleet: Fleet, device: str, update_id: str, phase: Phase, timeout: float = 15.0) -> bool:
    """The watcher's last ``state/ota`` of the update says ``phase`` (waited for, bounded).

    The publisher's session may hear the outcome before the watcher's does: both
    are subscribers of their own, and the broker delivers to each in its own time.
    """
    return fleet.inbox.wait_for(lambda _m: (p := _last_phase(fleet, device, update_id)) is not None
                                and p.phase is phase, timeout)


def test_good_update_commits_on_both_agents(fleet: Fleet) -> None:
    for name in ("gw-1", "gw-2"):
        fleet.add(name)
    fleet.wait_ready()
    code, report, logs = fleet.publish(fleet.bundle("good"), group="lobby",
                                       policy=RolloutPolicy(canary_fraction=0.5, parallel=2))
    assert code == 0, logs
    assert dict(report.outcomes) == {"gw-1": "committed", "gw-2": "committed"}
    for name, device in fleet.devices.items():
        assert device.slot() == "slot-b"
        assert (device.prefix / "slot-b" / "VERSION").read_text().strip() == "2.0"
        assert _reaches(fleet, name, report.update_id, Phase.COMMITTED), fleet.progress(name)
        assert 75 in device.systemd.exits  # the old agent handed over to the new slot
        assert report.resent_chunks[name] == 0
    # The new agents announced themselves with the slot and bundle version they run.
    for name in fleet.devices:
        assert fleet.inbox.wait_for(lambda _m, n=name: _bundle_of(fleet.birth(n)) == ("slot-b", "2.0"))


def _bundle_of(birth: Birth | None) -> tuple[str | None, str | None]:
    if birth is None:
        return None, None
    return birth.versions.get("slot"), birth.versions.get("bundle")


def test_bad_signature_is_refused(fleet: Fleet) -> None:
    device = fleet.add("gw-1")
    fleet.wait_ready()
    good = build_artifact(fleet.bundle("good"), kind="agent", version="2.0", keys_dir=fleet.keys,
                          chunk_size=CHUNK)
    forged = bytearray(good.signed.signature)
    forged[10] ^= 0x40
    artifact = Artifact(good.data, SignedManifest(good.signed.manifest_bytes, good.signed.key_id,
                                                  bytes(forged)), good.source)
    session = publisher_session(fleet.request(good.source).broker)
    session.start()
    publisher = OtaPublisher(session, artifact, RolloutPolicy(canary_fraction=1.0), timeout=TIMEOUT)
    try:
        report = publisher.run(["gw-1"])
    finally:
        publisher.close()
        session.stop(flush_timeout=1)
    assert report.outcomes["gw-1"] == "failed" and report.reasons["gw-1"] == "bad_signature", fleet.logs()
    assert report.bytes_sent.get("gw-1", 0) == 0  # not one chunk for a refused update
    assert device.slot() == "slot-a" and not (device.prefix / "slot-b").exists()
    assert _reaches(fleet, "gw-1", good.manifest.update_id, Phase.REFUSED, 10)


def test_corrupt_chunk_is_asked_for_again(fleet: Fleet) -> None:
    device = fleet.add("gw-1")
    fleet.wait_ready()
    damaged: list[int] = []

    def corrupt(_device: str, index: int, frame: bytes) -> bytes:
        if index == 1 and not damaged:
            damaged.append(index)
            return frame[:-1] + bytes([frame[-1] ^ 0xFF])  # the chunk's last byte: the digest fails
        return frame

    code, report, logs = fleet.publish(fleet.bundle("good", padding=3 * CHUNK), hook=corrupt,
                                       devices=("gw-1",))
    assert code == 0, logs
    assert damaged == [1] and report.resent_chunks["gw-1"] == 1
    assert device.slot() == "slot-b"


def test_disconnect_mid_transfer_resumes(fleet: Fleet) -> None:
    device = fleet.add("gw-1")
    fleet.wait_ready()
    killed = threading.Event()

    def kill_midway(_device: str, index: int, frame: bytes) -> bytes:
        if index == 60 and not killed.is_set():
            killed.set()
            device.systemd.kill(signal.SIGKILL)  # test-systemd starts it again, like Restart=on-failure
        return frame

    code, report, logs = fleet.publish(fleet.bundle("big", padding=3 * 2**20), hook=kill_midway,
                                       devices=("gw-1",))
    assert killed.is_set()
    assert code == 0, logs
    assert -signal.SIGKILL in device.systemd.exits
    chunks = report.chunk_count
    # Only what was in flight when it died may come again (the window is 8 chunks).
    assert report.resent_chunks["gw-1"] <= 24, (report.resent_chunks, logs)
    assert report.bytes_sent["gw-1"] < report.artifact_size * 1.1 + 64 * chunks
    assert device.slot() == "slot-b"


def test_failed_health_check_rolls_back(fleet: Fleet) -> None:
    device = fleet.add("gw-1")
    fleet.wait_ready()
    code, report, logs = fleet.publish(fleet.bundle("sick", healthy=False), devices=("gw-1",))
    assert code == 1, logs
    assert report.outcomes["gw-1"] == "failed" and report.reasons["gw-1"] == "health_check_failed", logs
    assert device.slot() == "slot-a"
    assert _reaches(fleet, "gw-1", report.update_id, Phase.ROLLED_BACK), fleet.progress("gw-1")
    # The old agent is back and running.
    assert wait_until(lambda: device.systemd.pid is not None, 15)


def test_crash_loop_rolls_back(fleet: Fleet) -> None:
    device = fleet.add("gw-1")
    fleet.wait_ready()
    code, report, logs = fleet.publish(fleet.bundle("crashy", crash=True), devices=("gw-1",))
    assert code == 1, logs
    assert report.outcomes["gw-1"] == "failed" and report.reasons["gw-1"] == "crash_loop", logs
    assert device.slot() == "slot-a"
    assert device.systemd.exits.count(1) == 2  # two crashed starts; the third went back to slot-a
    assert _reaches(fleet, "gw-1", report.update_id, Phase.ROLLED_BACK), fleet.progress("gw-1")


def test_canary_failure_halts_the_rollout(fleet: Fleet) -> None:
    canary, other = fleet.add("gw-1"), fleet.add("gw-2")
    fleet.wait_ready()
    code, report, logs = fleet.publish(fleet.bundle("sick", healthy=False), devices=("gw-1", "gw-2"),
                                       policy=RolloutPolicy(canary_fraction=0.5, parallel=2))
    assert code == 1, logs
    assert dict(report.outcomes) == {"gw-1": "failed", "gw-2": "not_offered"}, logs
    assert report.halted_reason
    assert canary.slot() == "slot-a" and other.slot() == "slot-a"
    assert not (other.prefix / "slot-b").exists()
    assert _last_phase(fleet, "gw-2", report.update_id) is None  # never offered, never heard of it
    assert not (other.home / "agent-data" / "ota" / report.update_id).exists()
