"""The agent's side of a trial at start and while it runs: watch our own health, or report how it ended.

At start the agent settles what the previous one left (see :mod:`agents.ota.trial`
for the decisions): a new agent on trial watches its connection, its jobs and
the slot's ``healthcheck`` for the window, then commits or switches back and
exits with :data:`~agents.runtime.EXIT_RESTART`; an old agent back in charge
reports the ending (``last_result.json`` from ``edgebus-slot prestart``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agents.ota.current import CurrentUpdate
from agents.ota.files import OtaPaths, atomic_write, read_json, remove_quietly
from agents.ota.progress import DETAIL_CHARS, ProgressReport, wall_ms
from agents.ota.slots import SlotLayout
from agents.ota.trial import Health, StartupAction, Trial, Verdict, judge, on_start, trial_outcome
from agents.runtime import EXIT_RESTART, Agent
from schemas.errors import CodecError
from schemas.ota import OtaProgress, Phase

__all__ = ["HEALTHCHECK_TIMEOUT", "TrialWatch"]

logger = logging.getLogger(__name__)

HEALTHCHECK_TIMEOUT = 60.0


@dataclass(slots=True)
class _Watch:
    """A new agent's health window (worker thread only)."""

    trial: Trial
    started: float
    failures_at_start: int
    healthcheck: tuple[bool, str] | None = None
    probed: bool = False


class TrialWatch:
    """Settles the previous run's trial at start; judges our own on the OTA worker's ticks."""

    def __init__(self, agent: Agent, paths: OtaPaths, slots: SlotLayout, report: ProgressReport,
                 current: CurrentUpdate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.paths = paths
        self.slots = slots
        self.report = report
        self.current = current
        self._clock = clock
        self._watch: _Watch | None = None
        self._connected_at: float | None = None  # the first connection (network thread writes once)

    def on_connected(self, _session: object) -> None:
        if self._connected_at is None:
            self._connected_at = self._clock()

    def settle_previous_run(self) -> None:
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
            self.current.claim(trial.update_id, Phase.TRIAL, busy=f"update {trial.update_id} is on trial")
            self.report.publish(OtaProgress(update_id=trial.update_id, phase=Phase.TRIAL,
                                            version=trial.version, received=trial.total, total=trial.total,
                                            slot=trial.new_slot, time_ms=wall_ms(),
                                            detail=f"health window of {trial.health_window_s:g} s open"))
            return
        last = self._read_last_result()
        if action is StartupAction.CONCLUDED:
            assert trial is not None
            outcome = trial_outcome(trial, last, wall_ms())
            logger.warning("update %s ended while no new agent ran: %s (%s)", trial.update_id,
                           outcome.phase.value, outcome.reason)
            self.report.record(outcome)
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
                self.report.record(outcome)
        remove_quietly(self.paths.last_result)

    def _read_last_result(self) -> dict[str, Any] | None:
        try:
            return read_json(self.paths.last_result)
        except CodecError as exc:
            logger.error("%s", exc)
            return {}

    def tick(self, now: float) -> None:
        """Judge our own trial, if this agent is on one (the OTA worker's thread)."""
        if self._watch is not None:
            self._judge(now)

    def _judge(self, now: float) -> None:
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
            self.report.record(OtaProgress(update_id=trial.update_id, phase=Phase.COMMITTED,
                                           version=trial.version, received=trial.total, total=trial.total,
                                           slot=trial.new_slot, detail=why, time_ms=wall_ms()))
            remove_quietly(self.paths.trial)
            remove_quietly(self.paths.trial_attempts)
            self.current.settle(None)
            logger.warning("update %s committed: %s", trial.update_id, why)
            return
        outcome = OtaProgress(update_id=trial.update_id, phase=Phase.ROLLED_BACK, version=trial.version,
                              received=trial.total, total=trial.total, reason="health_check_failed",
                              detail=why[:DETAIL_CHARS], slot=trial.previous_slot, time_ms=wall_ms())
        # last_result.json first: whatever is cut short below, the previous agent learns the ending.
        atomic_write(self.paths.last_result, outcome.to_json_bytes())
        self.slots.switch(trial.previous_slot)
        remove_quietly(self.paths.trial)
        remove_quietly(self.paths.trial_attempts)
        self.report.record(outcome)
        self.current.refuse("restarting into the previous agent")
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
