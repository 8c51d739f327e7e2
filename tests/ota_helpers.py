"""Helpers for the OTA tests: a test "systemd", an A/B prefix, test agent bundles, a scripted device.

* :class:`TestSystemd` runs ``sh {prefix}/bin/edgebus-slot prestart`` and then
  ``{prefix}/current/bin/edge-agent run --config X`` and restarts the agent
  like the unit does (``Restart=on-failure``, ``RestartPreventExitStatus=2``,
  ``RestartForceExitStatus=75``), a bounded number of times.
* :func:`make_prefix` lays out ``slot-a`` (a wrapper running this checkout's
  agent, ``VERSION`` 1.0), ``current -> slot-a`` and ``bin/edgebus-slot``.
* :func:`make_agent_bundle` writes a signed bundle-like directory whose
  ``install.sh`` honours ``EDGEBUS_OTA``/``EDGEBUS_PREFIX`` and puts the same
  wrapper into the inactive slot with ``VERSION`` 2.0 (optionally a failing
  ``healthcheck``, or an agent that crashes at once).
* :class:`ScriptedDevice` is a device built from the pure download protocol
  (no agent): it lets the server's own tests run without the agent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from broker.router import ReceivedMessage
from broker.session import BusSession
from firmware_tools.keys import load_signing_key
from firmware_tools.manifest import write_manifest
from firmware_tools.units import slot_script
from protocols.ota.download import ChunkOutcome, Download
from protocols.ota.trust import KeyRing, verify_offer
from schemas.birth import Birth
from schemas.command import Command
from schemas.errors import CodecError, UpdateRefused
from schemas.messages import decode_record, encode_record
from schemas.ota import OtaProgress, Phase, SignedManifest, UpdateManifest, decode_chunk
from tests.agent_helpers import REPO, agent_toml
from tests.brokers import RunningBroker
from tests.bus_helpers import config_for

__all__ = ["ScriptedDevice", "TestSystemd", "agent_wrapper", "make_agent_bundle", "make_prefix",
           "ota_agent_toml"]

#: Starts of the agent one TestSystemd allows (an update takes 2, a crash loop 3, a roll-back 1 more).
MAX_STARTS = 12


def agent_wrapper(crash: bool = False) -> str:
    """``bin/edge-agent`` of a test slot: this checkout's agent, run by this test's Python."""
    if crash:
        return "#!/bin/sh\necho 'edge-agent: this build crashes at start' >&2\nexit 1\n"
    return f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m agents.cli "$@"\n'


def make_prefix(prefix: Path, version: str = "1.0") -> Path:
    """An installed device's ``/opt/edgebus``: slot-a live with ``version``."""
    slot = prefix / "slot-a"
    (slot / "bin").mkdir(parents=True)
    (slot / "bin" / "edge-agent").write_text(agent_wrapper())
    (slot / "bin" / "edge-agent").chmod(0o755)
    (slot / "VERSION").write_text(version + "\n")
    (slot / "BUNDLE_ID").write_text("test-slot-a\n")
    (prefix / "current").symlink_to("slot-a")
    (prefix / "bin").mkdir()
    (prefix / "bin" / "edgebus-slot").write_text(slot_script())
    (prefix / "bin" / "edgebus-slot").chmod(0o755)
    return prefix


_TEST_INSTALL = r"""#!/bin/sh
# A test agent bundle's installer: same contract as the real one in OTA mode.
set -eu
BUNDLE_DIR=$(cd "$(dirname "$0")" && pwd)
PREFIX=${EDGEBUS_PREFIX:-/opt/edgebus}
if [ "${EDGEBUS_OTA:-0}" != 1 ]; then echo "test bundle: only EDGEBUS_OTA=1 installs" >&2; exit 1; fi
case "$(readlink "$PREFIX/current" 2>/dev/null || true)" in
  slot-a) target=slot-b ;;
  *) target=slot-a ;;
esac
rm -rf "$PREFIX/$target"
mkdir -p "$PREFIX/$target/bin"
cp "$BUNDLE_DIR/edge-agent" "$PREFIX/$target/bin/edge-agent"
chmod 0755 "$PREFIX/$target/bin/edge-agent"
if [ -f "$BUNDLE_DIR/healthcheck" ]; then
  cp "$BUNDLE_DIR/healthcheck" "$PREFIX/$target/healthcheck"
  chmod 0755 "$PREFIX/$target/healthcheck"
fi
cp "$BUNDLE_DIR/VERSION" "$PREFIX/$target/VERSION"
cp "$BUNDLE_DIR/BUNDLE_ID" "$PREFIX/$target/BUNDLE_ID"
echo "edgebus: installed into $target"
"""


def make_agent_bundle(out: Path, keys: Path, *, version: str = "2.0", healthy: bool = True,
                      crash: bool = False, padding: int = 0, exist_ok: bool = False) -> Path:
    """A signed bundle-like directory (``padding`` random bytes make the transfer longer)."""
    out.mkdir(parents=True, exist_ok=exist_ok)
    (out / "install.sh").write_text(_TEST_INSTALL)
    (out / "install.sh").chmod(0o755)
    (out / "edge-agent").write_text(agent_wrapper(crash=crash))
    (out / "VERSION").write_text(version + "\n")
    (out / "BUNDLE_ID").write_text(f"test-{version}-{'ok' if healthy else 'sick'}\n")
    if not healthy:
        (out / "healthcheck").write_text("#!/bin/sh\necho 'healthcheck: not well' >&2\nexit 1\n")
        (out / "healthcheck").chmod(0o755)
    if padding:
        (out / "padding.bin").write_bytes(os.urandom(padding))
    write_manifest(out, load_signing_key(keys), {"bundle_id": f"test-{version}", "device": "any"})
    return out


def ota_agent_toml(broker: RunningBroker, home: Path, device: str, *, prefix: Path, trusted_keys: Path,
                   groups: Sequence[str] = (), health_window: float = 2.0,
                   request_timeout: float = 1.0) -> Path:
    """An agent.toml with an ``[ota]`` section (home: the device's own folder)."""
    return agent_toml(broker, home, device, groups=groups, interval=5, extra=f"""
[ota]
prefix = "{prefix}"
trusted_keys = "{trusted_keys}"
request_timeout = {request_timeout}
health_window = {health_window}
""")


class TestSystemd:
    """A tiny service manager for one agent: ExecStartPre, ExecStart, restart on failure."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, prefix: Path, data_dir: Path, config: Path, *, max_starts: int = MAX_STARTS,
                 restart_delay: float = 0.2) -> None:
        self.prefix = prefix
        self.data_dir = data_dir
        self.config = config
        self.max_starts = max_starts
        self.restart_delay = restart_delay
        self.log_path = config.parent / "agent.log"
        self.exits: list[int] = []
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"test-systemd-{config.parent.name}",
                                        daemon=True)

    def start(self) -> TestSystemd:
        self._thread.start()
        return self

    def _env(self) -> dict[str, str]:
        return {**os.environ, "EDGEBUS_PREFIX": str(self.prefix), "EDGEBUS_DATA": str(self.data_dir),
                "PYTHONUNBUFFERED": "1"}

    def _serve(self) -> None:
        with self.log_path.open("ab") as log:
            while self.starts < self.max_starts and not self._stopping.is_set():
                self.starts += 1
                log.write(f"--- test-systemd: start {self.starts}\n".encode())
                log.flush()
                subprocess.run(["sh", str(self.prefix / "bin" / "edgebus-slot"), "prestart"], env=self._env(),
                               stdout=log, stderr=log, check=False, timeout=30)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    agent = self.prefix / "current" / "bin" / "edge-agent"
                    self._proc = subprocess.Popen(
                        [str(agent), "run", "--config", str(self.config)],
                        env=self._env(), cwd=self.config.parent, stdout=log, stderr=subprocess.STDOUT)
                rc = self._proc.wait()
                self.exits.append(rc)
                log.write(f"--- test-systemd: exit {rc}\n".encode())
                log.flush()
                if self._stopping.is_set() or rc in (0, 2):  # clean stop, or a configuration error
                    return
                self._stopping.wait(self.restart_delay)

    @property
    def pid(self) -> int | None:
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Signal the running agent (the service manager then restarts it); False if none runs."""
        pid = self.pid
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return True

    def current_slot(self) -> str:
        return os.readlink(self.prefix / "current")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._thread.join(timeout)


class ScriptedDevice:
    """A device that speaks the OTA protocol with :class:`Download` and nothing else.

    ``finish``: the phase it reports once the artifact is complete and intact
    (``committed``, ``rolled_back`` ...), or ``silent`` to accept offers and
    then never say a word.
    """

    def __init__(self, broker: RunningBroker, device: str, ring: KeyRing, *, groups: Sequence[str] = (),
                 capabilities: Sequence[str] = ("metrics", "ota"), finish: str = "committed",
                 window: int = 8) -> None:
        self.device = device
        self.ring = ring
        self.finish = finish
        self.window = window
        self.groups = tuple(groups)
        self.capabilities = tuple(capabilities)
        self.offers: list[SignedManifest] = []
        self.outcomes: list[ChunkOutcome] = []
        self.download: Download | None = None
        self.artifact = bytearray()
        self.sha256_ok: bool | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self.session = BusSession(config_for(broker, client_id=f"scripted-{device}", device=device),
                                  birth=self._birth)
        topics = self.session.topics
        self.session.subscribe(topics.cmd(device, "ota"), self._on_offer)
        self.session.subscribe(topics.cmd(device, "ota/chunk"), self._on_chunk)

    def _birth(self) -> bytes:
        return encode_record(Birth(device=self.device, epoch=1, agent_version="1.0", time_ms=0,
                                   capabilities=self.capabilities, groups=self.groups))

    def start(self) -> ScriptedDevice:
        self.session.start()
        assert self.session.wait_connected(15), self.session.stats().last_error
        return self

    def stop(self) -> None:
        self.session.stop(flush_timeout=2)

    def _publish_progress(self, manifest: UpdateManifest, phase: Phase, reason: str | None = None) -> None:
        received = self.download.received if self.download else 0
        progress = OtaProgress(update_id=manifest.update_id, phase=phase, version=manifest.version,
                               received=received, total=manifest.chunk_count, reason=reason,
                               time_ms=int(time.time() * 1000))
        self.session.publish(self.session.topics.state(self.device, "ota"), progress.to_json_bytes(),
                             retain=True)

    def _reply(self, command: Command, ok: bool, **fields: object) -> None:
        if command.reply_to:
            doc = {"id": command.command_id, "name": command.name, "device": self.device, "ok": ok, **fields}
            self.session.publish(command.reply_to, json.dumps(doc).encode())

    def _ask(self, request: object) -> None:
        if request is not None:
            self.session.publish(self.session.topics.ota(self.device, "want"),
                                 request.to_json_bytes())  # type: ignore[attr-defined]

    def _on_offer(self, msg: ReceivedMessage) -> None:
        command = decode_record(msg.payload)
        assert isinstance(command, Command)
        signed = SignedManifest.from_offer(command.args)
        with self._lock:
            self.offers.append(signed)
            try:
                manifest = verify_offer(self.ring, signed)
            except UpdateRefused as exc:
                self._reply(command, False, reason=exc.reason, error=str(exc))
                self._publish_progress(signed.manifest, Phase.REFUSED, exc.reason)
                self.done.set()
                return
            self._reply(command, True, result={"update_id": manifest.update_id, "phase": "offered"})
            if self.finish == "silent":
                return
            if self.download is None or self.download.manifest.update_id != manifest.update_id:
                self.download = Download(manifest, window=self.window)
                self.artifact = bytearray(manifest.size)
            self._publish_progress(manifest, Phase.DOWNLOADING)
            self._ask(self.download.on_timeout())  # a repeated offer re-asks what is outstanding

    def _on_chunk(self, msg: ReceivedMessage) -> None:
        try:
            update_id, index, data = decode_chunk(msg.payload)
        except CodecError:
            return
        with self._lock:
            download = self.download
            if download is None or download.complete:
                return
            outcome = download.on_chunk(index, data, update_id=update_id)
            self.outcomes.append(outcome)
            if outcome is ChunkOutcome.ACCEPTED:
                offset, _ = download.manifest.chunk_range(index)
                self.artifact[offset:offset + len(data)] = data
            if not download.complete:
                self._ask(download.request())
                return
            manifest = download.manifest
            self.sha256_ok = hashlib.sha256(self.artifact).hexdigest() == manifest.sha256
            phase = Phase(self.finish) if self.sha256_ok else Phase.REFUSED
            self._publish_progress(manifest, phase, None if phase is Phase.COMMITTED else "test_says_no")
            self.done.set()
