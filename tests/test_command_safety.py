"""Commands that cannot harm the device (issue 17, breaks 9 and 10).

Break 9: ``config`` with interval 0.001, ``assign`` of ``file:///etc/shadow``,
``/root``, any ``http://`` URL (the agent fetched a local metadata listener)
and 40 cameras at once. Break 10: a refused OTA offer's unverified version on
the retained ``state/ota``, a refusal naming 40,000 keys, 64 KiB dead letters
with only a time bound, and a printed ``mosquitto -c`` line that fails as root.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.camera.source_policy import SourcePolicy
from agents.commands.bounds import bounds_problem
from agents.config import AgentConfig, CommandsConfig
from agents.ota.compat import incompatibility
from broker.cli import main as broker_main
from coordinator.store import DeadLetterRecord, RetentionConfig, WriteBatch
from protocols.ota.trust import KeyRing, TrustedKey, key_id, verify_offer
from schemas.command import Command
from schemas.errors import CommandRefused, ConfigError, UpdateRefused
from schemas.messages import encode_record
from schemas.ota import OtaProgress, Phase, SignedManifest
from tests.agent_helpers import agent_toml, reap_agent, spawn_agent, stop_agent
from tests.brokers import RunningBroker, find_mosquitto, free_port, wait_for_port
from tests.bus_helpers import observer
from tests.test_agent_ota import CHUNK, Site, artifact_bytes, sign, site
from tests.test_ingest_limits import Harness, harness
from tests.test_store_support import StoreFactory, backend, open_backend

__all__ = ["backend", "harness", "open_backend", "site"]

DEVICE = "gw-safe"
PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


def _command(name: str, **args: Any) -> Command:
    return Command(device=DEVICE, name=name, command_id="c-1", time_ms=1, args=args)


# -- numeric bounds (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "args", "key"), [
    ("config", {"metrics": {"interval": 0.001}}, "metrics.interval"),
    ("config", {"metrics": {"batch_interval": 0.01}}, "metrics.batch_interval"),
    ("config", {"metrics": {"heartbeat": 0.5}}, "metrics.heartbeat"),
    ("assign", {"camera": "c", "source": 0, "fps": 1000}, "fps"),
    ("assign", {"camera": "c", "source": 0, "fps": 0}, "fps"),
    ("assign", {"camera": "c", "source": 0, "queue_size": 1000}, "queue_size"),
    ("assign", {"camera": "c", "source": 0, "snapshot_max_bytes": 2**30}, "snapshot_max_bytes"),
    ("assign", {"camera": "c", "source": 0, "reconnect_min_delay": 0.001}, "reconnect_min_delay"),
    ("assign", {"camera": "c", "source": 0, "motion": {"width": 100_000}}, "motion.width"),
    ("assign", {"camera": "c", "source": 0, "detector": {"threads": 4096}}, "detector.threads"),
    ("assign", {"camera": "c", "source": 0, "detector": {"input_size": 8192}}, "detector.input_size"),
])
def test_numbers_outside_the_command_bounds_are_named(name: str, args: dict[str, Any], key: str) -> None:
    problem = bounds_problem(_command(name, **args), CommandsConfig())
    assert problem is not None and problem.startswith(f"{key} = "), problem


def test_numbers_inside_the_bounds_and_malformed_ones_pass_to_the_strict_reader() -> None:
    limits = CommandsConfig()
    for args in ({"metrics": {"interval": 1.0, "batch_interval": 5}}, {"metrics": {"interval": math.nan}},
                 {"metrics": {"interval": "fast"}}, {"metrics": {"deadband": 5.0}}):
        assert bounds_problem(_command("config", **args), limits) is None, args
    assert bounds_problem(_command("assign", camera="c", source=0, fps=8, queue_size=32), limits) is None
    faster = CommandsConfig(min_interval=0.05)
    assert bounds_problem(_command("config", metrics={"interval": 0.1}), faster) is None


def test_commands_table_is_strict_and_caps_the_configured_cameras() -> None:
    base = {"device": {"id": DEVICE}, "broker": {"host": "x"}}
    with pytest.raises(ConfigError, match=r"unknown key commands\.min_intervall"):
        AgentConfig.from_mapping({**base, "commands": {"min_intervall": 1}})
    with pytest.raises(ConfigError, match="camera_folders must be absolute"):
        AgentConfig.from_mapping({**base, "commands": {"camera_folders": ["frames"]}})
    cameras = [{"name": f"c{i}", "source": i} for i in range(3)]
    with pytest.raises(ConfigError, match=r"3 \[\[cameras\]\] configured; commands\.max_cameras is 2"):
        AgentConfig.from_mapping({**base, "cameras": cameras, "commands": {"max_cameras": 2}})
    assert AgentConfig.from_mapping(base).commands == CommandsConfig()


# -- camera sources (pure) ----------------------------------------------------------------


def _policy(tmp_path: Path, **overrides: Any) -> SourcePolicy:
    allowed = tmp_path / "allowed"
    allowed.mkdir(exist_ok=True)
    (allowed / "clip.mp4").write_bytes(b"x")
    (allowed / "escape").unlink(missing_ok=True)
    (allowed / "escape").symlink_to("/etc")

    def resolve(host: str, port: int, **_: Any) -> list[Any]:
        address = {"cam.evil": "169.254.169.254", "cam.lan": "10.0.0.7"}.get(host)
        if address is None:
            raise socket.gaierror("no such host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    values: dict[str, Any] = {"camera_folders": (str(allowed),), **overrides}
    return SourcePolicy(CommandsConfig(**values), resolve=resolve)


@pytest.mark.parametrize("source", [
    "file:///etc/shadow", "/etc/shadow", "/root", "/root/.ssh/id_rsa", "http://127.0.0.1:8080/latest/meta-data",
    "https://example.com/cam.mjpg", "/dev/sda", "/dev/video0/../sda", "{tmp}/allowed/escape/shadow",
    "{tmp}/allowed/../secret.mp4", "file://other-host{tmp}/allowed/clip.mp4", "rtmp://10.0.0.5/live",
    "rtsp://169.254.169.254/stream", "rtsp://cam.evil/stream", "rtsp://metadata.google.internal/x",
])
def test_sources_outside_the_allow_list_are_refused(tmp_path: Path, source: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        _policy(tmp_path).check_source(source.format(tmp=tmp_path))
    assert refused.value.reason == "source_not_allowed"


@pytest.mark.parametrize("source", [
    0, "3", "/dev/video2", "rtsp://10.0.0.5/stream", "rtsp://user:pw@cam.lan:8554/s", "rtsps://cam.lan/s",
    "rtsp://cam.unresolvable/s", "{tmp}/allowed", "{tmp}/allowed/clip.mp4", "file://{tmp}/allowed/clip.mp4",
])
def test_sources_the_allow_list_covers_are_admitted(tmp_path: Path, source: int | str) -> None:
    _policy(tmp_path).check_source(source.format(tmp=tmp_path) if isinstance(source, str) else source)


def test_url_prefixes_match_without_credentials_and_link_local_needs_its_host_named(tmp_path: Path) -> None:
    lan = _policy(tmp_path, camera_urls=("rtsp://10.0.0.", "http://"))
    lan.check_source("rtsp://admin:secret@10.0.0.5:554/s")
    for sneaky in ("rtsp://10.0.0.5@169.254.169.254/s", "rtsp://10.0.0.5.evil.example/s",
                   "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x", "http://cam.evil/x"):
        with pytest.raises(CommandRefused):
            lan.check_source(sneaky)
    named = _policy(tmp_path, camera_urls=("http://169.254.10.5/",))
    named.check_source("http://169.254.10.5/stream.mjpg")
    partial = _policy(tmp_path, camera_urls=("http://169.254.",))
    with pytest.raises(CommandRefused, match="link-local"):
        partial.check_source("http://169.254.169.254/latest/meta-data")


def test_a_detector_model_from_the_bus_must_be_an_allowed_file(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    with pytest.raises(CommandRefused, match="detector model"):
        policy.check_table({"source": 0, "detector": {"type": "yolo", "model": "/etc/shadow"}})
    policy.check_table({"source": 0, "detector": {"type": "yolo", "model": str(tmp_path / "allowed/m.onnx")}})


def test_a_camera_moved_here_by_two_phase_commit_meets_the_same_allow_list_and_cap(tmp_path: Path) -> None:
    """The coordinator's TakeCamera is a table from the bus too: the participant votes no."""
    from agents.camera.assignments import CameraAssignments
    from agents.camera.host import CameraHost
    from agents.camera.move_resource import CameraMoveResource
    from broker.session import BusConfig, BusSession
    from protocols.twopc.camera_work import TakeCamera, encode_camera_work

    def no_detector(options: Any) -> Any:
        raise ConfigError("not launched here")

    session = BusSession(BusConfig.from_mapping({"host": "127.0.0.1", "port": 1, "device": DEVICE,
                                                 "outbox_path": str(tmp_path / "outbox.sqlite")}))
    host = CameraHost(session, [], detector_factory=no_detector,
                      limits=CommandsConfig(camera_folders=(str(tmp_path),)))
    resource = CameraMoveResource(host, CameraAssignments(tmp_path / "assignments.json"), tmp_path / "tx")
    shadow = resource.prepare("t1", encode_camera_work(TakeCamera("door", {"source": "/etc/shadow"})), 0)
    assert not shadow.ok and "camera_folders" in shadow.reason
    assert resource.prepare("t2", encode_camera_work(TakeCamera("door", {"source": str(tmp_path)})), 0).ok
    none = CameraHost(session, [], detector_factory=no_detector, limits=CommandsConfig(max_cameras=0))
    with pytest.raises(CommandRefused) as refused:
        none.check_table({"name": "door", "source": 0})
    assert refused.value.reason == "too_many_cameras"


# -- over the bus: a real agent process on Mosquitto --------------------------------------


class Listener:
    """A local HTTP server standing in for a metadata service: it records every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ami-id\ninstance-id\n")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


@pytest.mark.integration
def test_hostile_commands_over_the_bus_are_refused_and_counted(
        mosquitto_broker: RunningBroker, tmp_path: Path, metadata: Listener) -> None:
    """Every command of break 9, sent over Mosquitto to a real agent: refused with its reason."""
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(PHOTOS / "coffee.jpg", frames / "000.jpg")
    extra = f'\n[commands]\nmax_cameras = 1\ncamera_folders = ["{frames}"]\n'
    config = agent_toml(mosquitto_broker, tmp_path, DEVICE, interval=1.0, collectors=["agent"], extra=extra)
    obs, inbox = observer(mosquitto_broker, f"edgebus/{DEVICE}/#")
    proc = spawn_agent(config)
    replies = f"edgebus/{DEVICE}/state/last_command"

    def send(command_id: str, name: str, **args: Any) -> dict[str, Any]:
        obs.publish(f"edgebus/{DEVICE}/cmd/{name}", encode_record(Command(
            device=DEVICE, name=name, command_id=command_id, time_ms=1, args=args)))

        def reply() -> dict[str, Any] | None:
            found = [json.loads(p) for p in inbox.payloads(replies) if p]
            return next((r for r in found if r.get("id") == command_id), None)

        assert inbox.wait_for(lambda ms: reply() is not None, timeout=60), f"no reply to {command_id}"
        answer = reply()
        assert answer is not None
        return answer

    meta = f"http://127.0.0.1:{metadata.port}/latest/meta-data"
    hostile: list[tuple[str, dict[str, Any], str]] = [
        ("config", {"metrics": {"interval": 0.001}}, "out_of_bounds"),
        ("assign", {"camera": "meta", "source": meta}, "source_not_allowed"),
        ("assign", {"camera": "shadow", "source": "file:///etc/shadow"}, "source_not_allowed"),
        ("assign", {"camera": "root", "source": "/root"}, "source_not_allowed"),
        ("assign", {"camera": "fast", "source": str(frames), "fps": 1000}, "out_of_bounds"),
        ("assign", {"camera": "model", "source": str(frames),
                    "detector": {"type": "yolo", "model": "/etc/shadow"}}, "source_not_allowed"),
    ]
    try:
        assert inbox.wait_last(f"edgebus/{DEVICE}/status", b"online")
        for i, (name, args, reason) in enumerate(hostile):
            answer = send(f"h-{i}", name, **args)
            assert answer["ok"] is False and answer["reason"] == reason, (name, args, answer)
        first = send("ok-1", "assign", camera="door", source=str(frames), fps=2, loop=True)
        assert first["ok"] is True, first
        second = send("cap-1", "assign", camera="door2", source=str(frames), fps=2)
        assert second["ok"] is False and second["reason"] == "too_many_cameras", second
        again = send("ok-2", "assign", camera="door", source=str(frames), fps=1, loop=True)  # a replacement
        assert again["ok"] is True, again
        # The metrics interval did not change: the agent's own counters say how the commands went.
        assert stop_agent(proc) == 0
    finally:
        reap_agent(proc)
        obs.stop()
    assert metadata.requests == [], f"the agent fetched {metadata.requests}"


# -- OTA: the refusal of an unverified offer ---------------------------------------------


@pytest.mark.integration
def test_a_refused_offer_does_not_publish_its_unverified_version(site: Site) -> None:
    running = site.start_agent()
    try:
        good = sign(site.key, artifact_bytes(2 * CHUNK), kind="model", name="m.bin", version="6.6.6-forged")
        forged = SignedManifest(good.manifest_bytes, good.key_id, bytes(64))
        reply = site.server.reply(site.server.offer(forged))
        assert reply["reason"] == "bad_signature", reply
        refused = site.server.wait_phase(good.manifest.update_id, Phase.REFUSED)
        assert refused.version == "unverified"
        assert all("6.6.6" not in p.version for p in site.server.progress(good.manifest.update_id))

        stranger = sign(Ed25519PrivateKey.generate(), artifact_bytes(CHUNK), kind="model", name="m.bin",
                        version="7.7.7-stranger")
        reply = site.server.reply(site.server.offer(stranger))
        assert reply["reason"] == "unknown_key", reply
        state: OtaProgress = site.server.wait_phase(stranger.manifest.update_id, Phase.REFUSED)
        assert state.version == "unverified" and "7.7.7" not in (state.detail or "")
    finally:
        running.stop()


def test_the_unknown_key_refusal_names_a_few_of_40000_keys() -> None:
    public = Ed25519PrivateKey.generate().public_key()
    ring = KeyRing(tuple(TrustedKey(f"key-{i:05d}", public, "active", "2026-01-01") for i in range(40_000)))
    stranger = Ed25519PrivateKey.generate()
    body = sign(stranger, b"x" * CHUNK, kind="model", name="m.bin").manifest_bytes
    with pytest.raises(UpdateRefused) as refused:
        verify_offer(ring, SignedManifest(body, key_id(stranger.public_key()), stranger.sign(body)))
    text = str(refused.value)
    assert "40000 keys, first 5: key-00000" in text and "key-00005" not in text and len(text) < 500


def test_an_incompatibility_names_a_few_of_40000_unknown_requirements() -> None:
    requires = {f"req{i:05d}": True for i in range(40_000)}
    manifest = sign(Ed25519PrivateKey.generate(), b"x" * CHUNK, kind="model", name="m.bin",
                    requires=requires).manifest
    problem = incompatibility(manifest, ["cameras"])
    assert problem is not None and "40000 keys, first 5: req00000" in problem and len(problem) < 500


# -- dead letters: bounded in size and in number ------------------------------------------


def test_a_dead_letter_keeps_4_kib_of_the_payload_and_its_length_and_digest(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    payload = b"\x00" + os.urandom(64 * 1024 - 1)  # not an envelope: a dead letter
    h.send(f"edgebus/{DEVICE}/metrics", payload)
    h.settle()
    (letter,) = [d for b in h.rows.batches for d in b.dead_letters]
    assert len(letter.payload) == 4096 and letter.payload == payload[:4096]
    assert f"payload {len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()}" in letter.error
    small = harness(dead_letter_payload_bytes=100)
    small.send(f"edgebus/{DEVICE}/metrics", payload[:100])
    small.settle()
    (short,) = [d for b in small.rows.batches for d in b.dead_letters]
    assert short.payload == payload[:100] and "sha256" not in short.error


def test_dead_letters_are_bounded_in_number_besides_their_days(open_backend: StoreFactory) -> None:
    store = open_backend(retention=RetentionConfig(dead_letter_max_rows=3))
    t0 = 1_763_900_000_000
    store.write_batch(WriteBatch(dead_letters=[
        DeadLetterRecord(t0 + i // 2, "edgebus/x/metrics", "malformed", f"n{i}", b"") for i in range(10)]))
    result = store.apply_retention(t0 + 1000)
    assert result.dead_letters_deleted == 7
    assert sorted(d.error for d in store.dead_letters()) == ["n7", "n8", "n9"]
    with pytest.raises(ConfigError, match="dead_letter_max_rows"):
        RetentionConfig.from_mapping({"dead_letter_max_rows": -1})


# -- the printed Mosquitto command line works as root -------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="the break is about starting Mosquitto as root")
def test_the_printed_mosquitto_command_starts_as_root(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    mosquitto = find_mosquitto()
    if mosquitto is None:
        pytest.skip("no mosquitto binary")
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user to drop to")
    devices = tmp_path / "devices.csv"
    devices.write_text("gw-1\n")
    # pytest's tmp dirs sit in a private folder; where an operator writes a site, Mosquitto's user
    # can reach it (it drops to that user before it reads passwd and acl).
    out = Path(tempfile.mkdtemp(prefix="edgebus-site-"))
    os.chmod(out, 0o755)
    port = free_port()
    try:
        assert broker_main(["mosquitto-config", "--devices", str(devices), "--out", str(out), "--host",
                            "127.0.0.1", "-p", str(port), "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        argv = shlex.split(printed["start"])
        assert argv[0] == "mosquitto"
        proc = subprocess.Popen([mosquitto, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            up = wait_for_port("127.0.0.1", port, timeout=10, alive=proc)
            if not up:
                proc.terminate()
            assert up, proc.communicate(timeout=5)[0].decode(errors="replace")
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(out, ignore_errors=True)
