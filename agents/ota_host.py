"""Over-the-air updates in the agent: offers, the chunk pull, installs, the new agent's trial.

The ``ota`` command offers a signed manifest. The offer is checked on the
command worker (signature against the key ring, ``requires`` against this
device, a recorded outcome for an update seen before) and answered at once;
everything slow happens on this part's own worker thread: chunk frames from
``cmd/ota/chunk`` arrive on the network thread and are only queued, then
verified, written and followed by the next :class:`~schemas.ota.ChunkRequest`
on ``{root}/{device}/ota/want`` (at most ``[ota] window`` in flight, asked
again after ``request_timeout`` without a chunk). Progress goes to the
retained ``state/ota`` on every phase change and at most once a second while
downloading.

An agent update ends this process: its bundle's ``install.sh`` fills the
inactive slot, ``trial.json`` is written, ``current`` switches, and the agent
stops gracefully asking to exit with :data:`~agents.runtime.EXIT_RESTART`
(75), for systemd to start the new slot. That agent finds ``trial.json``, watches
its own health for the window and commits, or switches back and exits 75 again
(see :mod:`agents.ota.trial`). See :mod:`agents.ota.files` for the files.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from agents.commands import CommandDispatcher
from agents.config import OtaConfig
from agents.extension import AgentExtension
from agents.ota.compat import incompatibility
from agents.ota.extract import safe_extract
from agents.ota.files import OtaPaths, atomic_write, read_json, remove_quietly
from agents.ota.install import bundle_root, install_keys, install_model, restore_model, run_install_script
from agents.ota.outcome import UpdateFailed, read_outcome, write_outcome
from agents.ota.slots import SlotLayout
from agents.ota.store import DownloadStore
from agents.ota.trial import Health, StartupAction, Trial, Verdict, judge, on_start, trial_outcome
from agents.runtime import EXIT_RESTART, Agent
from broker.router import ReceivedMessage
from broker.trust import load_trusted
from protocols.ota.download import ChunkOutcome, Download
from protocols.ota.trust import KeyRing, UpdateRefused, verify_offer
from schemas.command import Command
from schemas.errors import CodecError, ConfigError, EdgebusError
from schemas.messages import MetricSample
from schemas.ota import ChunkRequest, OtaProgress, Phase, SignedManifest, UpdateManifest, decode_chunk

__all__ = ["OtaHost"]

logger = logging.getLogger(__name__)

JSON: Final = "application/json"
PROGRESS_INTERVAL = 1.0
HEALTHCHECK_TIMEOUT = 60.0
_DETAIL_CHARS = 2000
_STOP: Final = object()


@dataclass(slots=True)
class _Active:
    """The download in progress (worker thread only)."""

    signed: SignedManifest
    store: DownloadStore
    download: Download
    last_chunk: float
    phase: Phase = Phase.DOWNLOADING

    @property
    def manifest(self) -> UpdateManifest:
        return self.signed.manifest


@dataclass(slots=True)
class _Watch:
    """A new agent's health window (worker thread only)."""

    trial: Trial
    started: float
    failures_at_start: int
    healthcheck: tuple[bool, str] | None = None
    probed: bool = False


class OtaHost(AgentExtension):
    """The ``ota`` command, the chunk pull, the installs and the trial of a new agent."""

    name = "ota"

    def __init__(self, agent: Agent, config: OtaConfig, dispatcher: CommandDispatcher, *,
                 capabilities: Collection[str] | None = None, clock: Callable[[], float] = time.monotonic,
                 machine: str | None = None, python: str | None = None,
                 on_model: Callable[[Path], list[str]] | None = None) -> None:
        self.agent = agent
        # Restarts what uses a newly installed model (the cameras); raising refuses the model.
        self._on_model = on_model
        self.session = agent.session
        self.device = agent.device
        self.config = config
        self.paths = OtaPaths(agent.config.device.data_dir)
        self.slots = SlotLayout(config.prefix)
        slot = self.slots.active()
        if slot is not None:
            # Which slot runs, and the bundle version it holds: what an operator checks after a rollout.
            agent.versions["slot"] = slot
            bundle = self.slots.version(slot)
            if bundle:
                agent.versions["bundle"] = bundle
        self.want_topic = self.session.topics.ota(self.device, "want")
        self.state_topic = self.session.topics.state(self.device, "ota")
        self._capabilities = capabilities if capabilities is not None else agent.capabilities
        self._clock = clock
        self._machine = machine
        self._python = python
        self._tick = min(0.25, config.request_timeout / 4)
        self._max_queued_chunks = 4 * config.window + 8
        self._tasks: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        # Read by the command worker, written under the lock: what an offer must not disturb.
        self._current_id: str | None = None  # being downloaded, installed or on trial
        self._current_phase = Phase.DOWNLOADING
        self._busy: str | None = None  # why offers are refused now (installing, on trial, restarting)
        self._queued_chunks = 0
        # Worker thread only.
        self._active: _Active | None = None
        self._watch: _Watch | None = None
        self._last_progress = 0.0
        self._connected_at: float | None = None  # the first connection (network thread writes once)
        self._worker: threading.Thread | None = None
        self.chunks_total = 0
        self.bytes_total = 0
        self.corrupt_total = 0
        self.dropped_total = 0
        dispatcher.register("ota", self._on_offer)
        dispatcher.register_raw("ota/chunk", self._on_chunk_message)
        self.session.on_connect(self._on_connected)

    def _on_connected(self, _session: object) -> None:
        if self._connected_at is None:
            self._connected_at = self._clock()

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """Settle a trial or a rollback left by the previous agent, then start the worker."""
        try:
            self._settle_previous_run()
        except Exception:
            logger.exception("could not settle the previous update's trial")
        self._worker = threading.Thread(target=self._work, name=f"edgebus-ota-{self.device}", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._tasks.put(_STOP)
        worker.join(10.0)
        if worker.is_alive():
            logger.warning("the OTA worker was still busy at stop (an install?)")
        elif self._active is not None:
            self._active.store.close()

    def collect(self, time_ms: int) -> list[MetricSample]:
        return [MetricSample(time_ms, "agent_ota_chunks_total", self.chunks_total),
                MetricSample(time_ms, "agent_ota_bytes_total", self.bytes_total),
                MetricSample(time_ms, "agent_ota_corrupt_chunks_total", self.corrupt_total)]

    # -- the offer (command worker thread) ---------------------------------

    def _on_offer(self, command: Command) -> dict[str, Any]:
        signed = SignedManifest.from_offer(command.args)  # CodecError: answered as bad_args
        m = signed.manifest
        try:
            verify_offer(self._key_ring(), signed)
        except UpdateRefused as exc:
            # Not recorded: an unverified update id is nobody's to claim.
            self._publish(self._progress(m, Phase.REFUSED, reason=exc.reason, detail=str(exc)))
            raise
        recorded = read_outcome(self.paths.update_dir(m.update_id))
        if recorded is not None:
            logger.info("update %s offered again; it already ended %s", m.update_id, recorded.phase.value)
            self._publish(recorded)
            return _result(recorded)
        with self._lock:
            if self._current_id == m.update_id:
                self._tasks.put(self._kick)
                return {"update_id": m.update_id, "phase": self._current_phase.value,
                        "total": m.chunk_count}
            if self._busy is not None:
                raise UpdateRefused("busy", f"update {m.update_id} refused: {self._busy}")
        problem = incompatibility(m, self._capabilities, machine=self._machine, python=self._python)
        if problem is None and m.kind == "agent" and self.slots.active() is None:
            problem = (f"{self.slots.current_link} is not a symlink to slot-a or slot-b: this agent was "
                       "not installed by install.sh, so there is no slot to fall back to")
        if problem is not None:
            self._conclude(m, Phase.REFUSED, "incompatible", problem)
            raise UpdateRefused("incompatible", problem)
        with self._lock:
            self._current_id = m.update_id
            self._current_phase = Phase.DOWNLOADING
        logger.info("update %s (%s %s, %d bytes in %d chunks) offered: downloading", m.update_id, m.kind,
                    m.version, m.size, m.chunk_count)
        self._tasks.put(partial(self._activate, signed))
        return {"update_id": m.update_id, "phase": Phase.DOWNLOADING.value, "total": m.chunk_count}

    def _key_ring(self) -> KeyRing:
        """The delivered list when there is one, else the configured file; read per offer."""
        delivered = self.paths.trusted_keys
        path = delivered if delivered.exists() else self.config.trusted_keys
        try:
            return load_trusted(path)
        except ConfigError as exc:
            raise UpdateRefused("unknown_key", f"no usable trusted keys: {exc}") from exc

    # -- the network thread --------------------------------------------------

    def _on_chunk_message(self, message: ReceivedMessage) -> None:
        with self._lock:
            if self._queued_chunks >= self._max_queued_chunks:
                self.dropped_total += 1  # asked for again after request_timeout
                return
            self._queued_chunks += 1
        self._tasks.put(partial(self._on_chunk, message.payload))

    # -- the worker thread ---------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self._tick)
            except queue.Empty:
                task = None
            if task is _STOP:
                return
            try:
                if callable(task):
                    task()
                self._on_tick()
            except Exception:
                logger.exception("OTA worker task failed")

    def _activate(self, signed: SignedManifest) -> None:
        m = signed.manifest
        if self._active is not None and self._active.manifest.update_id != m.update_id:
            logger.info("update %s supersedes %s (its download is kept for a later offer)", m.update_id,
                        self._active.manifest.update_id)
            self._active.store.close()
            self._active = None
        if self._active is not None:
            return
        store = DownloadStore(self.paths.update_dir(m.update_id), signed)
        try:
            have = store.open()
            download = Download(m, window=self.config.window, have=have)
        except (UpdateFailed, OSError, CodecError) as exc:
            store.close()
            self._end(m, exc)
            return
        active = _Active(signed, store, download, last_chunk=self._clock())
        self._active = active
        if have is not None:
            logger.info("update %s resumes with %d of %d chunks", m.update_id, download.received,
                        download.total)
        self._publish_download(active, force=True)
        if download.complete:
            self._complete(active)
        else:
            self._ask(download.request())

    def _kick(self) -> None:
        """The same offer again: the server may have lost what it was sending, so ask afresh."""
        active = self._active
        if active is not None and active.phase is Phase.DOWNLOADING:
            self._ask(active.download.on_timeout())
            active.last_chunk = self._clock()

    def _on_chunk(self, payload: bytes) -> None:
        with self._lock:
            self._queued_chunks -= 1
        try:
            update_id, index, data = decode_chunk(payload)
        except CodecError as exc:
            self.corrupt_total += 1
            logger.warning("undecodable chunk frame dropped: %s", exc)
            return
        active = self._active
        if active is None or active.manifest.update_id != update_id or active.phase is not Phase.DOWNLOADING:
            logger.debug("chunk %d of update %s is not awaited; dropped", index, update_id)
            return
        outcome = active.download.on_chunk(index, data)
        active.last_chunk = self._clock()
        if outcome is ChunkOutcome.ACCEPTED:
            try:
                active.store.write_chunk(index, data, active.download.bitmap)
            except OSError as exc:
                self._abandon(active, UpdateFailed("io_error", f"cannot write the download: {exc}"))
                return
            self.chunks_total += 1
            self.bytes_total += len(data)
        elif outcome is ChunkOutcome.CORRUPT:
            self.corrupt_total += 1
            logger.warning("update %s: chunk %d does not match its digest; asking again", update_id, index)
        if active.download.complete:
            self._complete(active)
            return
        self._ask(active.download.request())
        self._publish_download(active)

    def _on_tick(self) -> None:
        active = self._active
        now = self._clock()
        if active is not None and active.phase is Phase.DOWNLOADING and \
                now - active.last_chunk >= self.config.request_timeout:
            request = active.download.on_timeout()
            if request is not None:
                logger.info("update %s: no chunk for %.1f s; asking again for %d chunks",
                            active.manifest.update_id, now - active.last_chunk,
                            sum(1 for _ in request.indexes()))
            self._ask(request)
            active.last_chunk = now
        if self._watch is not None:
            self._judge_trial(now)

    def _ask(self, request: ChunkRequest | None) -> None:
        if request is not None and not self.session.publish(self.want_topic, request.to_json_bytes(), qos=1,
                                                            retain=False, content_type=JSON):
            logger.warning("outbox refused a chunk request; asking again after the timeout")

    # -- completion and installs (worker thread) -----------------------------

    def _complete(self, active: _Active) -> None:
        m = active.manifest
        with self._lock:
            self._busy = f"installing update {m.update_id}"
            self._current_phase = Phase.INSTALLING
        active.phase = Phase.VERIFYING
        self._publish_download(active, force=True)
        restarting = False
        try:
            artifact = active.store.finish()
            active.phase = Phase.INSTALLING
            self._publish_download(active, force=True)
            if m.kind == "keys":
                install_keys(artifact, self.paths.trusted_keys)
            elif m.kind == "model":
                users = self._install_model(m, artifact)
            else:
                restarting = self._install_agent(active, artifact)
            if not restarting:
                active.store.discard()
                detail = f"{m.kind} {m.name} {m.version} installed"
                if m.kind == "model":
                    detail += f"; cameras restarted on it: {', '.join(users) or 'none'}"
                self._conclude(m, Phase.COMMITTED, None, detail)
        except (UpdateFailed, OSError, EdgebusError) as exc:
            active.store.discard()
            self._end(m, exc)
        except Exception as exc:  # a bug must still end the update visibly, not leave it hanging
            logger.exception("installing update %s failed", m.update_id)
            active.store.discard()
            self._end(m, exc)
        finally:
            self._active = None
            with self._lock:
                self._current_id = None
                self._busy = "restarting into the new agent" if restarting else None

    def _install_model(self, m: UpdateManifest, artifact: Path) -> list[str]:
        """Install the model, restart the cameras that use it; on failure put the old one back."""
        dest = install_model(artifact, self.paths.models, m.name)
        if self._on_model is None:
            return []
        try:
            return self._on_model(dest)
        except Exception as exc:
            restore_model(self.paths.models, m.name)
            try:
                self._on_model(dest)
            except Exception:
                logger.exception("cameras on %s did not come back on the previous model", m.name)
            raise UpdateFailed("model_check_failed", f"{exc}; the previous model is back in place",
                               Phase.ROLLED_BACK) from exc

    def _install_agent(self, active: _Active, artifact: Path) -> bool:
        """Fill the inactive slot, write trial.json, switch, ask for the restart; True when switched."""
        m = active.manifest
        previous = self.slots.active()
        if previous is None:
            raise UpdateFailed("incompatible", f"{self.slots.current_link} is no longer a slot symlink",
                               Phase.REFUSED)
        target = self.slots.inactive()
        store = active.store
        safe_extract(artifact, store.bundle)
        run_install_script(bundle_root(store.bundle), prefix=self.config.prefix,
                           data_dir=self.paths.data_dir, log=store.dir / "install.log")
        if not (self.config.prefix / target).is_dir():
            raise UpdateFailed("install_failed",
                               f"install.sh exited 0 but left no {self.config.prefix / target}")
        # The slot reports the version the update was published as (the birth's versions.bundle).
        atomic_write(self.config.prefix / target / "VERSION", (m.version + "\n").encode())
        store.discard()  # the slot holds its own copy now
        window = self.config.health_window or m.health_window_s
        trial = Trial(update_id=m.update_id, version=m.version, previous_slot=previous, new_slot=target,
                      health_window_s=window, total=m.chunk_count)
        atomic_write(self.paths.trial, trial.to_bytes())
        remove_quietly(self.paths.trial_attempts)
        try:
            self.slots.switch(target)
        except OSError:
            remove_quietly(self.paths.trial)
            raise
        self._publish(self._progress(m, Phase.TRIAL, received=m.chunk_count, slot=target,
                                     detail=f"{previous} -> {target}; restarting into the new agent "
                                            f"(health window {window:g} s)"))
        logger.warning("update %s installed in %s and switched to; exiting with %d to restart into it",
                       m.update_id, target, EXIT_RESTART)
        self.agent.request_stop(EXIT_RESTART)
        return True

    def _abandon(self, active: _Active, exc: UpdateFailed) -> None:
        active.store.discard()
        self._active = None
        with self._lock:
            self._current_id = None
        self._end(active.manifest, exc)

    def _end(self, m: UpdateManifest, exc: BaseException) -> None:
        """Record and report an update that ended in failure."""
        if isinstance(exc, UpdateFailed):
            phase, reason, detail = exc.phase, exc.reason, exc.detail
        elif isinstance(exc, UpdateRefused):
            phase, reason, detail = Phase.REFUSED, exc.reason, str(exc)
        elif isinstance(exc, OSError):
            phase, reason, detail = Phase.FAILED, "io_error", str(exc)
        else:
            phase, reason, detail = Phase.FAILED, "install_failed", f"{type(exc).__name__}: {exc}"
        logger.error("update %s %s (%s): %s", m.update_id, phase.value, reason, detail)
        with self._lock:
            if self._current_id == m.update_id:
                self._current_id = None
        self._conclude(m, phase, reason, detail)

    # -- the trial of a new agent ---------------------------------------------

    def _settle_previous_run(self) -> None:
        """At start: watch our own trial, or report how the last one ended."""
        try:
            doc = read_json(self.paths.trial)
            trial = Trial.from_doc(doc) if doc is not None else None
        except CodecError as exc:
            logger.error("unreadable %s removed: %s", self.paths.trial, exc)
            remove_quietly(self.paths.trial)
            trial = None
        action = on_start(trial, self.slots.active())
        if action is StartupAction.WATCH:
            assert trial is not None
            logger.warning("this agent is on trial for update %s (%s): watching its health for %g s",
                           trial.update_id, trial.new_slot, trial.health_window_s)
            self._watch = _Watch(trial, self._clock(), self.agent.scheduler.failures_total)
            with self._lock:
                self._busy = f"update {trial.update_id} is on trial"
                self._current_id = trial.update_id
                self._current_phase = Phase.TRIAL
            self._publish(OtaProgress(update_id=trial.update_id, phase=Phase.TRIAL, version=trial.version,
                                      received=trial.total, total=trial.total, slot=trial.new_slot,
                                      detail=f"health window of {trial.health_window_s:g} s open",
                                      time_ms=self._wall_ms()))
            return
        last = self._read_last_result()
        if action is StartupAction.CONCLUDED:
            assert trial is not None
            outcome = trial_outcome(trial, last, self._wall_ms())
            logger.warning("update %s ended while no new agent ran: %s (%s)", trial.update_id,
                           outcome.phase.value, outcome.reason)
            self._record(outcome)
            remove_quietly(self.paths.trial)
            remove_quietly(self.paths.trial_attempts)
        elif last is not None:
            try:
                outcome = OtaProgress.from_json_bytes(_json_bytes(_progress_doc(last)))
                if not outcome.terminal:
                    raise CodecError(f"phase {outcome.phase.value} is not an ending")
            except CodecError as exc:
                logger.error("unreadable %s dropped: %s", self.paths.last_result, exc)
            else:
                self._record(outcome)
        remove_quietly(self.paths.last_result)

    def _read_last_result(self) -> dict[str, Any] | None:
        try:
            return read_json(self.paths.last_result)
        except CodecError as exc:
            logger.error("%s", exc)
            return {}

    def _judge_trial(self, now: float) -> None:
        watch = self._watch
        assert watch is not None
        trial = watch.trial
        connected_at = self._connected_at
        connected_for = None if connected_at is None else now - max(connected_at, watch.started)
        if connected_for is not None and connected_for >= trial.health_window_s and not watch.probed:
            watch.healthcheck = self._run_healthcheck()  # once, at the end of the window
            watch.probed = True
        ok, detail = watch.healthcheck if watch.healthcheck is not None else (None, "")
        health = Health(connected_for=connected_for,
                        job_failures=self.agent.scheduler.failures_total - watch.failures_at_start,
                        healthcheck_ok=ok, healthcheck_detail=detail)
        verdict, why = judge(trial, health, now - watch.started)
        if verdict is Verdict.WAIT:
            return
        self._watch = None
        if verdict is Verdict.COMMIT:
            remove_quietly(self.paths.last_result)
            self._record(OtaProgress(update_id=trial.update_id, phase=Phase.COMMITTED, version=trial.version,
                                     received=trial.total, total=trial.total, slot=trial.new_slot,
                                     detail=why, time_ms=self._wall_ms()))
            remove_quietly(self.paths.trial)
            remove_quietly(self.paths.trial_attempts)
            with self._lock:
                self._busy = None
                self._current_id = None
            logger.warning("update %s committed: %s", trial.update_id, why)
            return
        outcome = OtaProgress(update_id=trial.update_id, phase=Phase.ROLLED_BACK, version=trial.version,
                              received=trial.total, total=trial.total, reason="health_check_failed",
                              detail=why[:_DETAIL_CHARS], slot=trial.previous_slot, time_ms=self._wall_ms())
        # last_result.json first: whatever is cut short below, the previous agent learns the ending.
        atomic_write(self.paths.last_result, outcome.to_json_bytes())
        self.slots.switch(trial.previous_slot)
        remove_quietly(self.paths.trial)
        remove_quietly(self.paths.trial_attempts)
        self._record(outcome)
        with self._lock:
            self._busy = "restarting into the previous agent"
        logger.error("update %s rolled back to %s: %s; exiting with %d", trial.update_id,
                     trial.previous_slot, why, EXIT_RESTART)
        self.agent.request_stop(EXIT_RESTART)

    def _run_healthcheck(self) -> tuple[bool, str] | None:
        """The slot's ``healthcheck`` program, when it has one: (passed, what it said)."""
        probe = self.slots.healthcheck()
        if not probe.is_file() or not os.access(probe, os.X_OK):
            return None
        try:
            proc = subprocess.run([str(probe)], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=HEALTHCHECK_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return False, f"{probe} did not answer within {HEALTHCHECK_TIMEOUT:g} s"
        except OSError as exc:
            return False, f"cannot run {probe}: {exc}"
        said = (proc.stdout + proc.stderr).decode(errors="replace").strip()[-500:]
        return proc.returncode == 0, f"{probe} exited {proc.returncode}: {said}" if proc.returncode else said

    # -- progress ----------------------------------------------------------------

    def _wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def _progress(self, m: UpdateManifest, phase: Phase, *, received: int = 0, reason: str | None = None,
                  detail: str | None = None, slot: str | None = None) -> OtaProgress:
        return OtaProgress(update_id=m.update_id, phase=phase, version=m.version, received=received,
                           total=m.chunk_count, reason=reason,
                           detail=detail[:_DETAIL_CHARS] if detail is not None else None, slot=slot,
                           time_ms=self._wall_ms())

    def _publish_download(self, active: _Active, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        self._publish(self._progress(active.manifest, active.phase, received=active.download.received))

    def _publish(self, progress: OtaProgress) -> None:
        if not self.session.publish(self.state_topic, progress.to_json_bytes(), qos=1, retain=True,
                                    content_type=JSON):
            logger.warning("outbox refused OTA progress %s of %s", progress.phase.value, progress.update_id)

    def _conclude(self, m: UpdateManifest, phase: Phase, reason: str | None, detail: str | None) -> None:
        received = m.chunk_count if phase is Phase.COMMITTED else 0
        self._record(self._progress(m, phase, received=received, reason=reason, detail=detail))

    def _record(self, outcome: OtaProgress) -> None:
        """Write the terminal outcome where a repeated offer finds it, then report it."""
        try:
            write_outcome(self.paths.update_dir(outcome.update_id), outcome)
        except OSError as exc:
            logger.error("cannot record the outcome of update %s: %s", outcome.update_id, exc)
        self._publish(outcome)


def _result(progress: OtaProgress) -> dict[str, Any]:
    """The offer's reply for an update that already ended here."""
    result: dict[str, Any] = {"update_id": progress.update_id, "phase": progress.phase.value,
                              "recorded": True}
    for key in ("reason", "detail", "slot"):
        value = getattr(progress, key)
        if value is not None:
            result[key] = value
    return result


def _progress_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``last_result.json`` as an OtaProgress document (a shell script may write a terse one)."""
    out = dict(doc)
    out.setdefault("format", 1)
    if "phase" not in out and "outcome" in out:
        out["phase"] = out.pop("outcome")
    out.setdefault("version", "unknown")
    return out


def _json_bytes(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc).encode()
