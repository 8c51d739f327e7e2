"""The agent's side of over-the-air updates: slots, safe unpacking, resumable downloads, trials,
and whole updates against a real Mosquitto with an in-process agent and an in-test server."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.assembly import build_agent
from agents.commands.dispatcher import CommandDispatcher
from agents.commands.host import CommandHost
from agents.config import AgentConfig
from agents.ota.compat import incompatibility, machine_matches
from agents.ota.extract import safe_extract
from agents.ota.files import OtaPaths
from agents.ota.host import OtaHost
from agents.ota.slots import SlotLayout
from agents.ota.store import DownloadStore
from agents.ota.trial import Health, StartupAction, Trial, Verdict, judge, on_start, trial_outcome
from agents.runtime import EXIT_RESTART, Agent
from broker.router import ReceivedMessage
from broker.session import BusSession
from protocols.ota.download import ChunkOutcome, Download
from protocols.ota.sender import ChunkServer
from protocols.ota.trust import KeyRing, TrustedKey, key_id
from schemas.command import Command
from schemas.errors import ConfigError, UpdateFailed
from schemas.messages import Birth, decode_record, encode_record
from schemas.ota import ChunkRequest, OtaProgress, Phase, SignedManifest, UpdateManifest
from tests.agent_helpers import agent_toml, spawn_agent
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, Inbox, config_for, wait_until

DEVICE = "gw-ota"
REPO = Path(__file__).resolve().parents[1]
CREATED = "2025-01-01T00:00:00Z"
CHUNK = 1024
_ids = itertools.count()


# -- signing helpers ----------------------------------------------------------------------


def ring_of(*keys: Ed25519PrivateKey) -> KeyRing:
    return KeyRing(tuple(TrustedKey(id=key_id(k.public_key()), public_key=k.public_key(), status="active",
                                    created=CREATED) for k in keys))


def sign(key: Ed25519PrivateKey, data: bytes, *, kind: str, name: str, version: str = "1.0",
         update_id: str | None = None, requires: dict[str, Any] | None = None,
         health_window_s: float = 60.0, chunk_size: int = CHUNK) -> SignedManifest:
    manifest = UpdateManifest.for_artifact(
        data, update_id=update_id or f"{kind}-{next(_ids)}", kind=kind, name=name, version=version,
        chunk_size=chunk_size, created=CREATED, requires=requires, health_window_s=health_window_s)
    body = manifest.to_bytes()
    return SignedManifest(body, key_id(key.public_key()), key.sign(body))


def artifact_bytes(size: int, seed: int = 1) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return out[:size]


def tar_gz(files: dict[str, bytes], *, extra: Callable[[tarfile.TarFile], None] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return buf.getvalue()


# -- slots -----------------------------------------------------------------------------------


def test_a_fresh_prefix_installs_into_slot_a_and_switching_replaces_the_link_in_one_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = SlotLayout(tmp_path)
    assert layout.active() is None and layout.inactive() == "slot-a"
    layout.switch("slot-a")
    assert os.readlink(tmp_path / "current") == "slot-a"
    assert layout.active() == "slot-a" and layout.inactive() == "slot-b"

    seen: list[str] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any) -> None:
        seen.append(os.readlink(tmp_path / "current"))  # the old link is still there, whole
        real_replace(src, dst)

    monkeypatch.setattr("agents.ota.slots.os.replace", watching_replace)
    layout.switch("slot-b")
    assert seen == ["slot-a"]
    assert os.readlink(tmp_path / "current") == "slot-b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current"]  # no temporary link left behind
    with pytest.raises(ConfigError, match="not a slot"):
        layout.switch("../etc")


def test_an_absolute_current_link_still_names_its_slot(tmp_path: Path) -> None:
    (tmp_path / "slot-b").mkdir()
    os.symlink(tmp_path / "slot-b", tmp_path / "current")
    assert SlotLayout(tmp_path).active() == "slot-b"
    os.remove(tmp_path / "current")
    os.symlink("/usr", tmp_path / "current")
    assert SlotLayout(tmp_path).active() is None


# -- safe extraction ---------------------------------------------------------------------------


def _link(name: str, target: str, *, hard: bool = False) -> Callable[[tarfile.TarFile], None]:
    """Adds a symbolic (or hard) link ``name`` -> ``target`` to a bundle's tar."""
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = target
        tar.addfile(info)
    return add


def _fifo(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    tar.addfile(info)


@pytest.mark.parametrize(("files", "extra"), [
    ({"/etc/cron.d/evil": b"x"}, None),
    ({"../evil": b"x"}, None),
    ({"bundle/../../evil": b"x"}, None),
    ({"install.sh": b"x"}, _link("escape", "/etc/passwd")),
    ({"install.sh": b"x"}, _link("wheels/escape", "../../outside")),
    ({"install.sh": b"x"}, _link("hard", "../outside", hard=True)),
    ({"install.sh": b"x"}, _fifo),
], ids=["absolute", "dotdot", "nested-dotdot", "symlink-absolute", "symlink-climbs", "hardlink", "fifo"])
def test_unsafe_archives_are_refused_before_anything_is_written(
        tmp_path: Path, files: dict[str, bytes], extra: Callable[[tarfile.TarFile], None] | None) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(tar_gz(files, extra=extra))
    dest = tmp_path / "x" / "y" / "bundle"
    with pytest.raises(UpdateFailed) as refused:
        safe_extract(archive, dest)
    assert refused.value.reason == "unsafe_archive" and refused.value.phase is Phase.REFUSED
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar.gz"]


def test_a_bundle_with_links_inside_unpacks(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(tar_gz({"install.sh": b"echo hi\n", "wheels/a.whl": b"wheel"},
                               extra=_link("wheels/latest.whl", "a.whl")))
    safe_extract(archive, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "install.sh").read_bytes() == b"echo hi\n"
    assert (tmp_path / "bundle" / "wheels" / "latest.whl").read_bytes() == b"wheel"


def test_garbage_is_not_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UpdateFailed) as refused:
        safe_extract(archive, tmp_path / "bundle")
    assert refused.value.reason == "bad_archive"


# -- the resumable download -------------------------------------------------------------------


def _feed(download: Download, store: DownloadStore, data: bytes, indexes: list[int]) -> None:
    for index in indexes:
        offset, length = download_range(store, index)
        assert download.on_chunk(index, data[offset:offset + length]) is ChunkOutcome.ACCEPTED
        store.write_chunk(index, data[offset:offset + length], download.bitmap)


def download_range(store: DownloadStore, index: int) -> tuple[int, int]:
    return store.manifest.chunk_range(index)


def test_a_download_resumes_from_what_survived_and_re_fetches_what_did_not(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    data = artifact_bytes(5 * CHUNK + 100)
    signed = sign(key, data, kind="model", name="m.bin")
    directory = tmp_path / signed.manifest.update_id
    store = DownloadStore(directory, signed)
    assert store.open() is None
    download = Download(signed.manifest, window=4)
    _feed(download, store, data, [0, 2, 3])
    store.close()  # the agent dies here

    # Chunk 3's bytes did not reach the disk although the bitmap says they did.
    with (directory / "artifact.part").open("r+b") as f:
        f.seek(3 * CHUNK)
        f.write(b"\0" * CHUNK)
    store = DownloadStore(directory, signed)
    have = store.open()
    resumed = Download(signed.manifest, window=4, have=have)
    assert resumed.received == 2 and sorted(resumed.missing()) == [1, 3, 4, 5]
    _feed(resumed, store, data, [1, 3, 4, 5])
    assert resumed.complete
    artifact = store.finish()
    assert artifact.read_bytes() == data
    assert sorted(p.name for p in directory.iterdir()) == ["artifact", "manifest.json", "manifest.sig"]
    assert (directory / "manifest.json").read_bytes() == signed.manifest_bytes


def test_a_verified_artifact_whose_install_was_cut_short_is_not_fetched_again(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    data = artifact_bytes(3 * CHUNK)
    signed = sign(key, data, kind="model", name="m.bin")
    store = DownloadStore(tmp_path / "u", signed)
    store.open()
    download = Download(signed.manifest)
    _feed(download, store, data, [0, 1, 2])
    store.finish()
    again = DownloadStore(tmp_path / "u", signed)
    assert Download(signed.manifest, have=again.open()).complete
    assert again.finish().read_bytes() == data


def test_an_artifact_that_does_not_match_its_manifest_is_refused_and_discarded(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    data = artifact_bytes(2 * CHUNK)
    honest = UpdateManifest.for_artifact(data, update_id="u-1", kind="model", name="m.bin", version="1",
                                         chunk_size=CHUNK, created=CREATED)
    lying = UpdateManifest.from_bytes(honest.to_bytes().replace(honest.sha256.encode(), b"0" * 64))
    body = lying.to_bytes()
    signed = SignedManifest(body, key_id(key.public_key()), key.sign(body))
    store = DownloadStore(tmp_path / "u-1", signed)
    store.open()
    _feed(Download(lying), store, data, [0, 1])
    with pytest.raises(UpdateFailed) as refused:
        store.finish()
    assert refused.value.reason == "hash_mismatch" and refused.value.phase is Phase.REFUSED
    assert not (tmp_path / "u-1" / "artifact.part").exists() and not (tmp_path / "u-1" / "artifact").exists()


# -- trial decisions ---------------------------------------------------------------------------

TRIAL = Trial(update_id="agent-1", version="2.0", previous_slot="slot-a", new_slot="slot-b",
              health_window_s=30.0, total=7)


def test_the_new_slot_watches_and_any_other_slot_reports_the_ending() -> None:
    assert on_start(None, "slot-a") is StartupAction.NONE
    assert on_start(TRIAL, "slot-b") is StartupAction.WATCH
    assert on_start(TRIAL, "slot-a") is StartupAction.CONCLUDED
    assert on_start(TRIAL, None) is StartupAction.CONCLUDED


@pytest.mark.parametrize(("health", "elapsed", "verdict"), [
    (Health(connected_for=10.0, job_failures=0), 12.0, Verdict.WAIT),  # window counts from connecting
    (Health(connected_for=None, job_failures=0), 100.0, Verdict.WAIT),  # still within the grace
    (Health(connected_for=1.0, job_failures=1), 1.0, Verdict.ROLL_BACK),
    (Health(connected_for=30.0, job_failures=0, healthcheck_ok=False), 30.0, Verdict.ROLL_BACK),
    (Health(connected_for=None, job_failures=0), 120.0, Verdict.ROLL_BACK),  # never reached the broker
    (Health(connected_for=30.0, job_failures=0), 90.0, Verdict.COMMIT),
    (Health(connected_for=31.0, job_failures=0, healthcheck_ok=True), 31.0, Verdict.COMMIT),
])
def test_trial_verdicts(health: Health, elapsed: float, verdict: Verdict) -> None:
    assert judge(TRIAL, health, elapsed, connect_grace=120.0)[0] is verdict


def test_a_trial_ended_by_a_crash_loop_reports_what_prestart_wrote() -> None:
    outcome = trial_outcome(TRIAL, {"outcome": "rolled_back", "reason": "crash_loop"}, 5)
    assert (outcome.phase, outcome.reason, outcome.slot, outcome.update_id) == \
        (Phase.ROLLED_BACK, "crash_loop", "slot-a", "agent-1")
    assert trial_outcome(TRIAL, None, 5).reason == "trial_abandoned"
    assert trial_outcome(TRIAL, {"update_id": "older", "reason": "crash_loop"}, 5).reason == "trial_abandoned"
    assert trial_outcome(TRIAL, {"phase": "trial", "reason": 7}, 5).phase is Phase.ROLLED_BACK
    assert Trial.from_doc(json.loads(TRIAL.to_bytes())) == TRIAL


# -- compatibility -------------------------------------------------------------------------------


def _manifest(kind: str = "agent", **requires: Any) -> UpdateManifest:
    return UpdateManifest.for_artifact(b"x" * 10, update_id="u", kind=kind, name="n", version="1",
                                       chunk_size=CHUNK, created=CREATED, requires=requires)


def test_requirements_are_checked_and_unknown_ones_refused() -> None:
    caps = ["metrics", "commands", "ota"]
    assert incompatibility(_manifest(), caps) is None
    assert "cameras" in (incompatibility(_manifest("model"), caps) or "")
    assert incompatibility(_manifest("model"), [*caps, "cameras"]) is None
    assert "gpu" in (incompatibility(_manifest(capabilities=["gpu"]), caps) or "")
    assert incompatibility(_manifest(target="pi-arm64"), caps, machine="aarch64") is None
    assert "target" in (incompatibility(_manifest(target="pi-arm64"), caps, machine="x86_64") or "")
    assert incompatibility(_manifest(python="3.11"), caps, python="3.11.7") is None
    assert "Python" in (incompatibility(_manifest(python="3.1"), caps, python="3.11.7") or "")
    assert "min_ram" in (incompatibility(_manifest(min_ram=512), caps) or "")
    assert machine_matches("amd64", "x86_64") and not machine_matches("arm64", "x86_64")


# -- configuration ---------------------------------------------------------------------------------


def _config(tmp_path: Path, **sections: Any) -> AgentConfig:
    base: dict[str, Any] = {"device": {"id": DEVICE, "data_dir": str(tmp_path / "data")},
                            "home_assistant": {"enabled": False}}
    for name, table in sections.items():
        base[name] = {**base.get(name, {}), **table}
    return AgentConfig.from_mapping(base)


@pytest.mark.parametrize(("sections", "message"), [
    ({"ota": {"windw": 8}}, "unknown key ota.windw"),
    ({"ota": {"window": 0}}, "ota: window"),
    ({"ota": {"window": "8"}}, "ota: window"),
    ({"ota": {"request_timeout": 0}}, "ota: request_timeout"),
    ({"ota": {"health_window": "1m"}}, "ota: health_window"),
    ({"ota": {"enabled": "yes"}}, "ota.enabled"),
    ({"ota": {"prefix": 5}}, "ota.prefix"),
    ({"device": {"groups": "lobby"}}, "device.groups"),
    ({"device": {"groups": ["lob by"]}}, "device.groups"),
])
def test_config_errors_name_the_key(tmp_path: Path, sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **sections)


def test_chunks_dropped_from_a_full_queue_are_reported_in_the_metrics(tmp_path: Path) -> None:
    config = _config(tmp_path, ota={"prefix": str(tmp_path / "prefix"), "window": 2})
    agent = Agent(config)
    host = OtaHost(agent, config.ota, CommandDispatcher(agent.session, DEVICE))
    frame = ReceivedMessage(f"edgebus/{DEVICE}/cmd/ota/chunk", b"frame", 1, False)
    queue_limit = 4 * config.ota.window + 8  # the worker is not started: nothing takes them off
    for _ in range(queue_limit + 3):
        host.worker.on_chunk_message(frame)
    figures = {s.name: s.value for s in host.collect(0)}
    assert figures["agent_ota_dropped_chunks_total"] == 3


def test_the_birth_carries_groups_and_the_ota_capability(tmp_path: Path) -> None:
    config = _config(tmp_path, device={"groups": ["lobby", "floor-2"]},
                     ota={"prefix": str(tmp_path / "prefix"), "health_window": 5})
    assert config.ota.health_window == 5.0 and config.ota.window == 8
    birth = decode_record(build_agent(config).birth())
    assert isinstance(birth, Birth)
    assert birth.groups == ("lobby", "floor-2") and "ota" in birth.capabilities
    off = decode_record(build_agent(_config(tmp_path / "off", ota={"enabled": False})).birth())
    assert isinstance(off, Birth) and "ota" not in off.capabilities and off.groups == ()


# -- against a real broker ---------------------------------------------------------------------------


class OtaServer:
    """A minimal update server: offers, answers chunk requests (optionally corrupting a frame once)."""

    def __init__(self, broker: RunningBroker) -> None:
        self.session = BusSession(config_for(broker, client_id=f"ota-server-{next(_ids)}"))
        self.topics = self.session.topics
        self.inbox = Inbox()
        self.replies = f"edgebus/{DEVICE}/replies"
        self.session.subscribe(self.topics.state(DEVICE, "ota"), self.inbox)
        self.session.subscribe(f"{self.replies}/#", self.inbox)
        self.session.subscribe(self.topics.ota(DEVICE, "want"), self._on_want)
        self.servers: dict[str, ChunkServer] = {}
        self.requested: list[int] = []
        self.corrupt_once: set[int] = set()
        self._lock = threading.Lock()
        self.session.start()
        assert self.session.wait_connected(WAIT), self.session.stats().last_error

    def serve(self, signed: SignedManifest, data: bytes) -> None:
        m = signed.manifest

        def read(index: int) -> bytes:
            offset, length = m.chunk_range(index)
            return data[offset:offset + length]
        self.servers[m.update_id] = ChunkServer(m, read)

    def _on_want(self, message: ReceivedMessage) -> None:
        request = ChunkRequest.from_json_bytes(message.payload)
        server = self.servers.get(request.update_id)
        if server is None:
            return
        with self._lock:
            self.requested += list(request.indexes())
            for index, frame in server.on_request(request):
                if index in self.corrupt_once:
                    self.corrupt_once.discard(index)
                    frame = frame[:-8] + bytes(b ^ 0xFF for b in frame[-8:])
                self.session.publish(self.topics.cmd(DEVICE, "ota/chunk"), frame, qos=1)

    def command(self, name: str, args: dict[str, Any]) -> str:
        command_id = f"c-{next(_ids)}"
        command = Command(device=DEVICE, name=name, command_id=command_id, time_ms=1, args=args,
                          reply_to=f"{self.replies}/{command_id}")
        assert self.session.publish(self.topics.cmd(DEVICE, name), encode_record(command))
        return command_id

    def offer(self, signed: SignedManifest) -> str:
        return self.command("ota", signed.to_offer(rollout="test"))

    def reply(self, command_id: str) -> dict[str, Any]:
        topic = f"{self.replies}/{command_id}"
        assert self.inbox.wait_for(lambda _: bool(self.inbox.payloads(topic))), f"no reply to {command_id}"
        body: dict[str, Any] = json.loads(self.inbox.payloads(topic)[0])
        return body

    def progress(self, update_id: str) -> list[OtaProgress]:
        payloads = self.inbox.payloads(self.topics.state(DEVICE, "ota"))
        states = [OtaProgress.from_json_bytes(p) for p in payloads]
        return [p for p in states if p.update_id == update_id]

    def wait_phase(self, update_id: str, phase: Phase) -> OtaProgress:
        assert wait_until(lambda: any(p.phase is phase for p in self.progress(update_id))), \
            f"{update_id} never reached {phase.value}: {[p.phase.value for p in self.progress(update_id)]}"
        return next(p for p in self.progress(update_id) if p.phase is phase)

    def wait_listening(self) -> None:
        """Ask for a rebirth until answered: the agent's command subscription is then in place."""
        for _ in range(40):
            topic = f"{self.replies}/{self.command('rebirth', {})}"
            if wait_until(lambda: bool(self.inbox.payloads(topic)), 0.5):  # noqa: B023 - used at once
                return
        raise AssertionError("the agent never answered")

    def stop(self) -> None:
        self.session.stop()


@dataclass
class RunningAgent:
    agent: Agent
    host: OtaHost
    thread: threading.Thread

    def stop(self) -> None:
        self.agent.request_stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()

    def wait_exit(self) -> int:
        """The agent stopped on its own (a slot switch): its exit code."""
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the agent did not stop"
        return self.agent.exit_code


@dataclass
class Site:
    broker: RunningBroker
    tmp: Path
    key: Ed25519PrivateKey
    trusted: Path
    server: OtaServer

    @property
    def prefix(self) -> Path:
        return self.tmp / "prefix"

    @property
    def paths(self) -> OtaPaths:
        return OtaPaths(self.tmp / "data")

    def config(self, **ota: Any) -> AgentConfig:
        return AgentConfig.from_mapping({
            "device": {"id": DEVICE, "data_dir": str(self.tmp / "data"), "groups": ["lobby"]},
            "broker": {"host": self.broker.host, "port": self.broker.port, "username": self.broker.username,
                       "password": self.broker.password, "reconnect_min_delay": 0.05,
                       "reconnect_max_delay": 0.5},
            "metrics": {"collectors": ["agent"]},
            "shedding": {"enabled": False},
            "home_assistant": {"enabled": False},
            "ota": {"prefix": str(self.prefix), "trusted_keys": str(self.trusted), "window": 4,
                    "request_timeout": 0.5, "health_window": 0.3, **ota},
        })

    def start_agent(self, cameras: list[dict[str, Any]] | None = None, *, listening: bool = True,
                    **ota: Any) -> RunningAgent:
        """An in-process agent with commands and OTA, and real camera pipelines for ``cameras`` tables.

        ``listening``: return once it answers a command (not for an agent that may exit first).
        """
        agent = Agent(self.config(**ota))
        on_model = None
        if cameras:
            from agents.camera.host import CameraHost, parse_camera

            camera_host = CameraHost(agent.session, [parse_camera(t, f"cameras[{i}]")
                                                     for i, t in enumerate(cameras)])
            agent.add_extension(camera_host)
            on_model = camera_host.reload_model
            self.cameras = camera_host
        commands = CommandHost(agent)
        agent.add_extension(commands)
        agent.capabilities += ["commands", "ota", "cameras"]
        host = OtaHost(agent, agent.config.ota, commands.dispatcher, on_model=on_model)
        agent.add_extension(host)
        thread = threading.Thread(target=agent.run, kwargs={"stop_timeout": 5.0}, daemon=True)
        thread.start()
        assert agent.session.wait_connected(WAIT), agent.session.stats().last_error
        if listening:
            self.server.wait_listening()
        return RunningAgent(agent, host, thread)


@pytest.fixture
def site(mosquitto_broker: RunningBroker, tmp_path: Path) -> Iterator[Site]:
    key = Ed25519PrivateKey.generate()
    trusted = tmp_path / "etc" / "trusted_keys.json"
    trusted.parent.mkdir()
    trusted.write_bytes(ring_of(key).to_bytes())
    server = OtaServer(mosquitto_broker)
    try:
        yield Site(mosquitto_broker, tmp_path, key, trusted, server)
    finally:
        server.stop()


def tiny_onnx(floats: int = 2000) -> bytes:
    """An ONNX model that loads (x + w, with w big enough for several chunks)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(floats, dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [floats])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [floats])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.mark.integration
def test_keys_then_model_updates_end_to_end_with_a_corrupt_chunk_re_requested(site: Site) -> None:
    running = site.start_agent()
    try:
        # A keys update adds a new signing key: the delivered list wins over /etc from now on.
        new_key = Ed25519PrivateKey.generate()
        keys_data = ring_of(new_key, site.key).to_bytes()
        keys = sign(site.key, keys_data, kind="keys", name="trusted_keys.json")
        site.server.serve(keys, keys_data)
        reply = site.server.reply(site.server.offer(keys))
        assert reply["ok"] and reply["result"]["phase"] == "downloading", reply
        site.server.wait_phase(keys.manifest.update_id, Phase.COMMITTED)
        assert site.paths.trusted_keys.read_bytes() == keys_data

        # A model signed by the new key, one of its frames corrupted on the way.
        model_data = tiny_onnx()
        model = sign(new_key, model_data, kind="model", name="tiny.onnx", version="7")
        assert model.manifest.chunk_count >= 6
        site.server.serve(model, model_data)
        site.server.corrupt_once.add(2)
        assert site.server.reply(site.server.offer(model))["ok"]
        done = site.server.wait_phase(model.manifest.update_id, Phase.COMMITTED)
        assert done.received == done.total == model.manifest.chunk_count
        assert (site.paths.models / "tiny.onnx").read_bytes() == model_data
        assert site.server.requested.count(2) == 2  # asked for again after the corrupt frame
        assert running.host.worker.corrupt_total == 1
        assert running.host.worker.chunks_total == keys.manifest.chunk_count + model.manifest.chunk_count
        assert running.host.worker.bytes_total == len(keys_data) + len(model_data)
        assert site.server.progress(model.manifest.update_id)[0].phase is Phase.DOWNLOADING

        # Offered again: answered from the record, nothing fetched again.
        asked = len(site.server.requested)
        again = site.server.reply(site.server.offer(model))
        assert again["ok"] and again["result"]["phase"] == "committed" and again["result"]["recorded"]
        assert len(site.server.requested) == asked

        # A second model version keeps the first as .previous.
        second = tiny_onnx(3000)
        replacement = sign(new_key, second, kind="model", name="tiny.onnx", version="8")
        site.server.serve(replacement, second)
        site.server.offer(replacement)
        site.server.wait_phase(replacement.manifest.update_id, Phase.COMMITTED)
        assert (site.paths.models / "tiny.onnx.previous").read_bytes() == model_data
        assert (site.paths.models / "tiny.onnx").read_bytes() == second
    finally:
        running.stop()


@pytest.mark.integration
def test_a_model_update_restarts_its_cameras_and_one_they_cannot_run_is_rolled_back(site: Site) -> None:
    pytest.importorskip("cv2")
    from agents.detectors.plugins.ssdlite import DEFAULT_MODEL

    site.paths.models.mkdir(parents=True)
    model_path = site.paths.models / "person.onnx"
    model_path.write_bytes(DEFAULT_MODEL.read_bytes())
    frames = site.tmp / "frames"
    frames.mkdir()
    for photo in sorted((REPO / "tests" / "data" / "photos").glob("*.jpg"))[:2]:
        (frames / photo.name).write_bytes(photo.read_bytes())
    door = {"name": "door", "source": str(frames), "fps": 2, "loop": True,
            "detector": {"type": "ssdlite", "model": str(model_path)}}
    running = site.start_agent(cameras=[door])
    try:
        first = site.cameras.pipeline("door")
        assert first is not None
        # The same network again (as a new version): the camera is restarted on the new file.
        data = DEFAULT_MODEL.read_bytes()
        good = sign(site.key, data, kind="model", name="person.onnx", version="2", chunk_size=256 * 1024)
        site.server.serve(good, data)
        site.server.offer(good)
        done = site.server.wait_phase(good.manifest.update_id, Phase.COMMITTED)
        assert "door" in (done.detail or "")
        second = site.cameras.pipeline("door")
        assert second is not None and second is not first

        # An ONNX file that loads but is not an SSDLite network: the camera cannot use it.
        wrong = tiny_onnx()
        bad = sign(site.key, wrong, kind="model", name="person.onnx", version="3")
        site.server.serve(bad, wrong)
        site.server.offer(bad)
        back = site.server.wait_phase(bad.manifest.update_id, Phase.ROLLED_BACK)
        assert back.reason == "model_check_failed" and "door" in (back.detail or "")
        assert model_path.read_bytes() == data  # the previous model is in place again
        assert site.cameras.cameras == ["door"]  # and the camera still runs
    finally:
        running.stop()


@pytest.mark.integration
def test_bad_signatures_unknown_keys_and_broken_models_are_refused(site: Site) -> None:
    running = site.start_agent()
    try:
        data = artifact_bytes(2 * CHUNK)
        good = sign(site.key, data, kind="model", name="m.bin")
        forged = SignedManifest(good.manifest_bytes, good.key_id, bytes(64))
        reply = site.server.reply(site.server.offer(forged))
        assert not reply["ok"] and reply["reason"] == "bad_signature", reply
        refused = site.server.wait_phase(good.manifest.update_id, Phase.REFUSED)
        assert refused.reason == "bad_signature"
        assert not site.paths.update_dir(good.manifest.update_id).exists()

        stranger = sign(Ed25519PrivateKey.generate(), data, kind="model", name="m.bin")
        reply = site.server.reply(site.server.offer(stranger))
        assert not reply["ok"] and reply["reason"] == "unknown_key"

        broken = sign(site.key, data, kind="model", name="broken.onnx")
        site.server.serve(broken, data)
        site.server.offer(broken)
        failed = site.server.wait_phase(broken.manifest.update_id, Phase.FAILED)
        assert failed.reason == "install_failed" and "broken.onnx" in (failed.detail or "")
        assert not (site.paths.models / "broken.onnx").exists()

        unfit = sign(site.key, data, kind="model", name="m.bin", requires={"capabilities": ["gpu"]})
        reply = site.server.reply(site.server.offer(unfit))
        assert not reply["ok"] and reply["reason"] == "incompatible"
        assert site.server.wait_phase(unfit.manifest.update_id, Phase.REFUSED).reason == "incompatible"
        assert running.host.worker.chunks_total == broken.manifest.chunk_count
    finally:
        running.stop()


@pytest.mark.integration
def test_a_revoked_signing_key_is_refused_although_its_signature_is_valid(site: Site) -> None:
    running = site.start_agent()
    try:
        # The site key is stolen: a keys update (signed by it, while still trusted) makes a new key
        # active and lists the stolen one as revoked.
        new_key = Ed25519PrivateKey.generate()
        stolen = site.key
        revoked = TrustedKey(id=key_id(stolen.public_key()), public_key=stolen.public_key(), status="revoked",
                             created=CREATED, revoked=CREATED, reason="compromised")
        keys_data = KeyRing((*ring_of(new_key).keys, revoked)).to_bytes()
        keys = sign(stolen, keys_data, kind="keys", name="trusted_keys.json")
        site.server.serve(keys, keys_data)
        site.server.offer(keys)
        site.server.wait_phase(keys.manifest.update_id, Phase.COMMITTED)

        data = artifact_bytes(2 * CHUNK)
        by_thief = sign(stolen, data, kind="model", name="m.bin")
        reply = site.server.reply(site.server.offer(by_thief))
        assert not reply["ok"] and reply["reason"] == "revoked_key", reply
        assert site.server.wait_phase(by_thief.manifest.update_id, Phase.REFUSED).reason == "revoked_key"
        assert not site.paths.update_dir(by_thief.manifest.update_id).exists()

        # A later list cannot bring the stolen key back, even signed by the good key.
        undo = ring_of(new_key, stolen).to_bytes()
        undo_offer = sign(new_key, undo, kind="keys", name="trusted_keys.json")
        site.server.serve(undo_offer, undo)
        site.server.offer(undo_offer)
        assert site.server.wait_phase(undo_offer.manifest.update_id, Phase.REFUSED).reason == "bad_keys"
        assert site.paths.trusted_keys.read_bytes() == keys_data
    finally:
        running.stop()


INSTALL_SH = b"""set -eu
[ "${EDGEBUS_OTA:-0}" = 1 ] || { echo "not in OTA mode" >&2; exit 3; }
case "$(readlink "$EDGEBUS_PREFIX/current")" in slot-a) target=slot-b ;; *) target=slot-a ;; esac
rm -rf "$EDGEBUS_PREFIX/$target"
mkdir -p "$EDGEBUS_PREFIX/$target"
cp "$(dirname "$0")/VERSION" "$EDGEBUS_PREFIX/$target/VERSION"
"""


def _prefix_on_slot_a(site: Site) -> None:
    (site.prefix / "slot-a").mkdir(parents=True)
    SlotLayout(site.prefix).switch("slot-a")


@pytest.mark.integration
@pytest.mark.parametrize("healthy", [True, False], ids=["commits", "rolls-back"])
def test_an_agent_update_switches_slots_restarts_and_is_judged_by_the_new_agent(
        site: Site, healthy: bool) -> None:
    _prefix_on_slot_a(site)
    bundle = tar_gz({"install.sh": INSTALL_SH, "VERSION": b"2.0\n", "BUNDLE_ID": b"b-2\n"})
    update = sign(site.key, bundle, kind="agent", name="edgebus-agent", version="2.0")
    uid = update.manifest.update_id
    site.server.serve(update, bundle)

    old = site.start_agent()
    assert site.server.reply(site.server.offer(update))["ok"]
    assert old.wait_exit() == EXIT_RESTART
    trial = site.server.wait_phase(uid, Phase.TRIAL)
    assert trial.slot == "slot-b"
    assert os.readlink(site.prefix / "current") == "slot-b"
    assert (site.prefix / "slot-b" / "VERSION").read_bytes() == b"2.0\n"
    recorded = json.loads(site.paths.trial.read_bytes())
    assert (recorded["previous_slot"], recorded["new_slot"], recorded["attempts"]) == ("slot-a", "slot-b", 0)
    assert not (site.paths.update_dir(uid) / "bundle").exists()  # the slot holds its own copy

    if not healthy:
        probe = site.prefix / "slot-b" / "healthcheck"
        probe.write_text("#!/bin/sh\necho 'model missing'\nexit 1\n")
        probe.chmod(0o755)
    # A slot failing its healthcheck ends the trial after health_window (0.3 s) and exits, on a busy
    # machine before it could answer the rebirth that wait_listening asks for.
    new = site.start_agent(listening=healthy)
    if healthy:
        done = site.server.wait_phase(uid, Phase.COMMITTED)
        assert done.slot == "slot-b"
        assert wait_until(lambda: not site.paths.trial.exists())
        assert os.readlink(site.prefix / "current") == "slot-b"
        again = site.server.reply(site.server.offer(update))
        assert again["result"]["phase"] == "committed"
        new.stop()
        assert new.agent.exit_code == 0
        return
    assert new.wait_exit() == EXIT_RESTART
    rolled = site.server.wait_phase(uid, Phase.ROLLED_BACK)
    assert rolled.reason == "health_check_failed" and "model missing" in (rolled.detail or "")
    assert os.readlink(site.prefix / "current") == "slot-a"
    assert not site.paths.trial.exists() and site.paths.last_result.exists()
    # The previous agent starts again, reports the recorded ending once, and refuses nothing new.
    back = site.start_agent()
    try:
        assert wait_until(lambda: not site.paths.last_result.exists())
        reply = site.server.reply(site.server.offer(update))
        assert (reply["result"]["phase"], reply["result"]["reason"]) == ("rolled_back", "health_check_failed")
    finally:
        back.stop()


@pytest.mark.integration
def test_a_trial_ended_by_prestart_is_reported_by_the_previous_agent(site: Site) -> None:
    _prefix_on_slot_a(site)
    site.paths.root.mkdir(parents=True)
    site.paths.trial.write_bytes(TRIAL.to_bytes())
    (site.paths.trial_attempts).write_text("3\n")
    site.paths.last_result.write_text('{"outcome": "rolled_back", "reason": "crash_loop"}\n')
    running = site.start_agent()
    try:
        ended = site.server.wait_phase(TRIAL.update_id, Phase.ROLLED_BACK)
        assert (ended.reason, ended.slot, ended.version) == ("crash_loop", "slot-a", "2.0")
        for leftover in (site.paths.trial, site.paths.trial_attempts, site.paths.last_result):
            assert not leftover.exists()
    finally:
        running.stop()


@pytest.mark.integration
def test_raw_handlers_get_the_payload_and_survive_their_own_errors(mosquitto_broker: RunningBroker) -> None:
    session = BusSession(config_for(mosquitto_broker, device=DEVICE, client_id=f"edgebus-{DEVICE}"))
    dispatcher = CommandDispatcher(session, DEVICE)
    got: list[bytes] = []

    def flaky(message: ReceivedMessage) -> None:
        got.append(message.payload)
        if len(got) == 1:
            raise RuntimeError("first one fails")

    dispatcher.register_raw("ota/chunk", flaky)
    dispatcher.start()
    session.start()
    sender = BusSession(config_for(mosquitto_broker, client_id="raw-sender"))
    watcher = Inbox()
    sender.subscribe(f"edgebus/{DEVICE}/state/last_command", watcher)
    sender.start()
    try:
        assert session.wait_connected(WAIT) and sender.wait_connected(WAIT)
        topic = sender.topics.cmd(DEVICE, "ota/chunk")
        for _ in range(50):  # until the device's subscription is surely in place
            sender.publish(topic, b"\x93not an envelope")
            if wait_until(lambda: len(got) >= 2, 0.2):
                break
        assert got[:2] == [b"\x93not an envelope"] * 2
        stats = dispatcher.stats()
        assert stats.raw_failed == 1 and stats.raw_received >= 2
        assert stats.received == 0 and stats.failed == 0
        assert watcher.payloads(f"edgebus/{DEVICE}/state/last_command") == []  # no reply to raw frames
    finally:
        dispatcher.stop()
        session.stop()
        sender.stop()


@pytest.mark.integration
def test_the_agent_process_exits_75_after_switching_slots(site: Site) -> None:
    _prefix_on_slot_a(site)
    bundle = tar_gz({"install.sh": INSTALL_SH, "VERSION": b"3.0\n"})
    update = sign(site.key, bundle, kind="agent", name="edgebus-agent", version="3.0")
    site.server.serve(update, bundle)
    config = agent_toml(site.broker, site.tmp, DEVICE, collectors=["agent"], extra=f"""
[ota]
prefix = "{site.prefix}"
trusted_keys = "{site.trusted}"
""")
    proc = spawn_agent(config)
    try:
        site.server.wait_listening()
        assert site.server.reply(site.server.offer(update))["ok"]
        assert proc.wait(WAIT) == EXIT_RESTART, (config.parent / "agent.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert site.server.wait_phase(update.manifest.update_id, Phase.TRIAL).slot == "slot-b"
    assert os.readlink(site.prefix / "current") == "slot-b"
    assert json.loads((site.tmp / "agent-data" / "ota" / "trial.json").read_bytes())["new_slot"] == "slot-b"
