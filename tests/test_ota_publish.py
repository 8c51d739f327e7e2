"""The OTA server: artifacts and signing, the CLI's input checks, and rollouts against scripted devices.

The devices here are :class:`tests.ota_helpers.ScriptedDevice` (the pure
download protocol on a real Mosquitto, no agent), so these tests judge the
server alone; tests/test_ota_e2e.py runs real agents.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.trust import load_trusted
from firmware_tools.agent_config import parse_broker_url
from firmware_tools.cli import main
from firmware_tools.keys import init_keys, rotate_keys
from firmware_tools.ota.publish import PublishRequest, parse_fraction, publish
from firmware_tools.ota.report import PublishReport
from firmware_tools.ota.transfer import DeviceTransfer
from firmware_tools.ota.view import ProgressView
from firmware_tools.ota_artifact import build_artifact, pack_directory
from protocols.ota.download import ChunkOutcome
from protocols.ota.rollout import RolloutPolicy
from protocols.ota.sender import ChunkServer
from protocols.ota.trust import verify_offer
from schemas.birth import Birth
from schemas.errors import BundleInvalid, ConfigError, UpdateRefused
from schemas.messages import encode_record
from schemas.ota import SignedManifest, decode_chunk, encode_chunk
from tests.brokers import MosquittoUnderTest, MqttProbe
from tests.ota_helpers import ScriptedDevice, make_agent_bundle

CHUNK = 16 * 1024


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "person.onnx"
    path.write_bytes(os.urandom(10 * CHUNK + 123))  # 11 chunks, the last one short
    return path


# -- artifacts --------------------------------------------------------------------------


def test_bundle_packs_reproducibly(tmp_path: Path, keys: Path) -> None:
    bundle = make_agent_bundle(tmp_path / "b", keys)
    first = pack_directory(bundle)
    (bundle / "VERSION").touch()  # a new mtime must not change the bytes
    os.utime(bundle / "install.sh", (1, 1))
    assert pack_directory(bundle) == first
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "install.sh" in names and "manifest.sig" in names
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in members)
    modes = {m.name: m.mode for m in members}
    assert modes["install.sh"] == 0o755 and modes["VERSION"] == 0o644


def test_a_bundles_device_credentials_stay_out_of_the_update(tmp_path: Path, keys: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "agent.toml").write_text('[broker]\nusername = "cam-1"\npassword = "cam-1-secret"\n')
    bundle = make_agent_bundle(bundle, keys, exist_ok=True)
    artifact = build_artifact(bundle, kind="agent", version="2.0", keys_dir=keys)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(artifact.data))) as tar:
        names = tar.getnames()
    assert "install.sh" in names and "agent.toml" not in names
    assert b"cam-1-secret" not in gzip.decompress(artifact.data)


def test_a_key_list_after_a_rotation_is_signed_by_the_key_devices_still_trust(
        tmp_path: Path, keys: Path) -> None:
    before = load_trusted(keys)  # what the devices hold
    old_id, new_id = rotate_keys(keys)
    artifact = build_artifact(keys / "trusted_keys.json", kind="keys", version="rot-1", keys_dir=keys)
    assert artifact.signed.key_id == old_id
    assert verify_offer(before, artifact.signed) == artifact.manifest
    # Everything else is signed with the new key (which the delivered list makes trusted).
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    assert build_artifact(model, kind="model", version="1", keys_dir=keys).signed.key_id == new_id


def test_symlinks_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match="symlink"):
        pack_directory(tmp_path / "d")


def test_artifact_manifest_is_signed_and_verifies(tmp_path: Path, keys: Path) -> None:
    bundle = make_agent_bundle(tmp_path / "b", keys)
    artifact = build_artifact(bundle, kind="agent", version="2.0", keys_dir=keys, chunk_size=1024,
                              health_window_s=5)
    manifest = artifact.manifest
    assert (manifest.kind, manifest.name, manifest.version) == ("agent", "edgebus-agent", "2.0")
    assert manifest.size == len(artifact.data) and manifest.health_window_s == 5.0
    assert b"".join(artifact.read_chunk(i) for i in range(manifest.chunk_count)) == artifact.data
    ring = load_trusted(keys)
    offer = artifact.signed.to_offer(rollout="r-1")
    assert verify_offer(ring, SignedManifest.from_offer(offer)) == manifest
    bad = bytearray(artifact.signed.signature)
    bad[0] ^= 1
    with pytest.raises(UpdateRefused) as refused:
        verify_offer(ring, SignedManifest(artifact.signed.manifest_bytes, artifact.signed.key_id, bytes(bad)))
    assert refused.value.reason == "bad_signature"
    again = build_artifact(bundle, kind="agent", version="2.0", keys_dir=keys, chunk_size=1024)
    assert again.manifest.sha256 == manifest.sha256 and again.manifest.update_id != manifest.update_id


def test_artifact_input_errors(tmp_path: Path, keys: Path, model: Path) -> None:
    bundle = make_agent_bundle(tmp_path / "b", keys)
    with pytest.raises(ConfigError, match="bundle directory"):
        build_artifact(model, kind="agent", version="2", keys_dir=keys)
    with pytest.raises(ConfigError, match="single file"):
        build_artifact(bundle, kind="model", version="2", keys_dir=keys)
    with pytest.raises(ConfigError, match="--kind"):
        build_artifact(model, kind="firmware", version="2", keys_dir=keys)
    with pytest.raises(ConfigError, match="chunk_size"):
        build_artifact(model, kind="model", version="2", keys_dir=keys, chunk_size=100)
    with pytest.raises(ConfigError, match="does not exist"):
        build_artifact(tmp_path / "nope.onnx", kind="model", version="2", keys_dir=keys)
    (bundle / "install.sh").write_text("#!/bin/sh\nrm -rf /\n")
    with pytest.raises(BundleInvalid, match=r"install\.sh"):
        build_artifact(bundle, kind="agent", version="2", keys_dir=keys)  # never re-sign a tampered bundle
    m = build_artifact(model, kind="model", version="2024-06", keys_dir=keys, chunk_size=CHUNK).manifest
    assert (m.name, m.chunk_count) == ("person.onnx", 11)


def test_fractions() -> None:
    assert parse_fraction("10%", "--canary", zero_ok=False) == pytest.approx(0.1)
    assert parse_fraction("0.5", "--canary", zero_ok=False) == 0.5
    assert parse_fraction("0%", "--max-failures", zero_ok=True) == 0.0
    for bad in ("0%", "120%", "abc", "-1", "nan"):
        with pytest.raises(ConfigError, match="--canary"):
            parse_fraction(bad, "--canary", zero_ok=False)


def test_cli_usage_errors(tmp_path: Path, keys: Path, model: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    base = ["ota", "publish", str(model), "--kind", "model", "--version", "1", "--keys", str(keys),
            "--broker", "mqtt://127.0.0.1:1"]
    assert main([*base, "--devices", "a", "--canary", "150%"]) == 2
    assert "--canary" in capsys.readouterr().err
    assert main([*base, "--devices", "a", "--to", "lobby"]) == 2  # one or the other
    assert main([*base]) == 2  # neither
    assert main([*base, "--devices", "_bad"]) == 2
    assert main([*base, "--devices", "a", "--parallel", "0"]) == 2
    assert main([*base[:2], str(tmp_path / "missing"), *base[3:], "--devices", "a"]) == 2
    assert main([*base, "--devices", "a", "--broker", "http://x"]) == 2


# -- rollouts over a real broker ----------------------------------------------------------


@pytest.fixture
def devices(mosquitto_broker: MosquittoUnderTest) -> Iterator[list[ScriptedDevice]]:
    started: list[ScriptedDevice] = []
    yield started
    for device in started:
        device.stop()


def _request(broker: MosquittoUnderTest, artifact: Path, keys: Path, **kw: object) -> PublishRequest:
    target = parse_broker_url(f"mqtt://{broker.host}:{broker.port}", broker.username, broker.password)
    options: dict[str, object] = {"artifact": artifact, "kind": "model", "version": "2024-06",
                                  "keys_dir": keys, "broker": target,
                                  "chunk_size": CHUNK, "timeout": 20.0, "settle": 2.0}
    options.update(kw)
    return PublishRequest(**options)  # type: ignore[arg-type]


def _run(req: PublishRequest, **kw: object) -> tuple[int, PublishReport]:
    out = io.StringIO()
    code, report = publish(req, out=out, **kw)  # type: ignore[arg-type]
    assert report is not None, out.getvalue()
    return code, report


def test_group_rollout_commits_and_counts_bytes(mosquitto_broker: MosquittoUnderTest, keys: Path,
                                                 model: Path, devices: list[ScriptedDevice]) -> None:
    ring = load_trusted(keys)
    for name, groups, caps in (("cam-1", ["lobby"], ("ota",)), ("cam-2", ["lobby", "east"], ("ota",)),
                               ("cam-3", ["lobby"], ("metrics",)), ("cam-4", ["yard"], ("ota",))):
        devices.append(ScriptedDevice(mosquitto_broker, name, ring, groups=groups, capabilities=caps).start())
    with MqttProbe(mosquitto_broker) as probe:  # a device that went away, leaving its retained birth
        probe.connected()
        probe.publish("edgebus/cam-5/birth", encode_record(Birth(
            device="cam-5", epoch=1, agent_version="1", time_ms=0, capabilities=("ota",), groups=("lobby",))),
            retain=True)
        probe.publish("edgebus/cam-5/status", b"offline", retain=True)
    out = io.StringIO()
    code, report = publish(_request(mosquitto_broker, model, keys, group="lobby",
                                    policy=RolloutPolicy(canary_fraction=0.5, parallel=2)), out=out)
    assert code == 0 and report is not None and report.ok
    # cam-3 lacks "ota", cam-4 is in another group, cam-5 is offline
    assert report.targeted == ("cam-1", "cam-2")
    assert "skipping cam-3: no ota capability" in out.getvalue()
    assert "skipping cam-5: offline" in out.getvalue()
    assert dict(report.outcomes) == {"cam-1": "committed", "cam-2": "committed"}
    for device in devices[:2]:
        assert device.sha256_ok and bytes(device.artifact) == model.read_bytes()
        assert report.resent_chunks[device.device] == 0
        framing = report.bytes_sent[device.device] - model.stat().st_size
        assert 0 < framing < 100 * report.chunk_count  # a few bytes of msgpack per chunk
    assert not devices[2].offers and not devices[3].offers


def test_corrupt_chunk_is_asked_for_again(mosquitto_broker: MosquittoUnderTest, keys: Path, model: Path,
                                          devices: list[ScriptedDevice]) -> None:
    devices.append(ScriptedDevice(mosquitto_broker, "cam-1", load_trusted(keys)).start())
    damaged: list[int] = []

    def corrupt_once(device: str, index: int, frame: bytes) -> bytes:
        if index in (3, 10) and index not in damaged:
            damaged.append(index)
            update_id, _, data = decode_chunk(frame)
            return encode_chunk(update_id, index, bytes([data[0] ^ 0xFF]) + data[1:])
        return frame

    code, report = _run(_request(mosquitto_broker, model, keys, devices=("cam-1",)), frame_hook=corrupt_once)
    assert code == 0 and report.outcomes["cam-1"] == "committed"
    assert devices[0].outcomes.count(ChunkOutcome.CORRUPT) == 2 and devices[0].sha256_ok
    assert report.resent_chunks["cam-1"] == 2


def test_refusal_and_silence_fail_the_rollout(mosquitto_broker: MosquittoUnderTest, keys: Path, model: Path,
                                              tmp_path: Path, devices: list[ScriptedDevice]) -> None:
    init_keys(tmp_path / "other")
    devices.append(ScriptedDevice(mosquitto_broker, "cam-1", load_trusted(tmp_path / "other")).start())
    devices.append(ScriptedDevice(mosquitto_broker, "cam-2", load_trusted(keys), finish="silent").start())
    code, report = _run(_request(mosquitto_broker, model, keys, devices=("cam-1", "cam-2"), timeout=2.0,
                                 policy=RolloutPolicy(canary_fraction=1.0, max_failure_fraction=1.0)))
    assert code == 1 and not report.ok
    assert dict(report.outcomes) == {"cam-1": "failed", "cam-2": "timed_out"}
    assert report.reasons["cam-1"] == "unknown_key"
    assert devices[1].offers  # it was offered, and said nothing after


def test_canary_failure_halts_the_rollout(mosquitto_broker: MosquittoUnderTest, keys: Path, model: Path,
                                          devices: list[ScriptedDevice]) -> None:
    ring = load_trusted(keys)
    devices.append(ScriptedDevice(mosquitto_broker, "cam-9", ring, finish="rolled_back").start())
    devices.append(ScriptedDevice(mosquitto_broker, "cam-1", ring).start())
    out = io.StringIO()
    code, report = publish(_request(mosquitto_broker, model, keys, devices=("cam-9", "cam-1"),
                                    policy=RolloutPolicy(canary_fraction=0.5)), out=out)
    assert code == 1 and report is not None
    assert dict(report.outcomes) == {"cam-9": "failed", "cam-1": "not_offered"}
    assert report.halted_reason and not devices[1].offers
    assert "HALTED" in out.getvalue() and "not offered 1" in out.getvalue()


def test_no_device_in_group_is_a_usage_error(mosquitto_broker: MosquittoUnderTest, keys: Path,
                                             model: Path) -> None:
    with pytest.raises(ConfigError, match="no device in group"):
        publish(_request(mosquitto_broker, model, keys, group="nobody", settle=0.5), out=io.StringIO())


def test_cli_publishes_to_a_device(mosquitto_broker: MosquittoUnderTest, keys: Path, model: Path,
                                   devices: list[ScriptedDevice], capsys: pytest.CaptureFixture[str]) -> None:
    devices.append(ScriptedDevice(mosquitto_broker, "cam-1", load_trusted(keys)).start())
    b = mosquitto_broker
    assert main(["ota", "publish", str(model), "--kind", "model", "--version", "2024-06",
                 "--keys", str(keys), "--broker", f"mqtt://{b.host}:{b.port}", "--username", b.username,
                 "--password", b.password, "--devices", "cam-1", "--canary", "100%",
                 "--chunk-size", str(CHUNK), "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert "cam-1  committed" in out and "summary: committed 1" in out
    assert devices[0].sha256_ok


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_view_redraws_one_line_per_device_on_a_terminal(model: Path, keys: Path) -> None:
    artifact = build_artifact(model, kind="model", version="1", keys_dir=keys, chunk_size=CHUNK)
    a = DeviceTransfer("cam-1", ChunkServer(artifact.manifest, artifact.read_chunk), total=11)
    b = DeviceTransfer("cam-2", ChunkServer(artifact.manifest, artifact.read_chunk), total=11,
                       phase="downloading", received=4)
    screen = _Terminal()
    view = ProgressView(screen)
    view.update([a, b], now=0.0)
    b.received = 11
    b.phase = "committed"
    view.update([a, b], now=10.0)
    text = screen.getvalue()
    assert text.count("\x1b[2F") == 1  # the second frame moved up over the first
    assert "cam-2: downloading 4/11 chunks" in text and "cam-2: committed   11/11 chunks (100.0%)" in text
