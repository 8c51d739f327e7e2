"""A new agent's probation: it must prove itself healthy before the switch is kept.

Before the old agent switches ``current`` it writes ``trial.json``. The agent
that starts next reads it:

* ``current`` is the trial's new slot: this *is* the new agent, on trial. It
  watches its own health for the window, then commits (deletes trial.json) or
  switches back and exits for the old agent to start;
* ``current`` is anything else: the trial ended without a verdict from the new
  agent (``edgebus-slot prestart`` switched back after a crash loop, or an
  operator did). This is the old agent again; it reports the outcome
  (``last_result.json`` when there is one) and clears the trial.

The decisions are pure functions of what the caller observed, so they can be
tested without a clock, a broker or a second process.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from schemas.errors import CodecError
from schemas.ota import TERMINAL_PHASES, OtaProgress, Phase

__all__ = ["CONNECT_GRACE", "Health", "StartupAction", "Trial", "Verdict", "judge", "on_start",
           "trial_outcome"]

#: How long a new agent may take to reach the broker at all (a device that just booted may wait
#: for its network); the health window itself counts from the first connection.
CONNECT_GRACE = 120.0


@dataclass(frozen=True, slots=True)
class Trial:
    """The content of ``trial.json`` (indented JSON, one key a line: ``sed`` can read it)."""

    update_id: str
    version: str
    previous_slot: str
    new_slot: str
    health_window_s: float
    attempts: int = 0
    total: int = 0

    def to_bytes(self) -> bytes:
        doc = {"update_id": self.update_id, "version": self.version, "previous_slot": self.previous_slot,
               "new_slot": self.new_slot, "attempts": self.attempts,
               "health_window_s": self.health_window_s, "total": self.total}
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Trial:
        try:
            return cls(update_id=str(doc["update_id"]), version=str(doc["version"]),
                       previous_slot=str(doc["previous_slot"]), new_slot=str(doc["new_slot"]),
                       health_window_s=float(doc.get("health_window_s", 60.0)),
                       attempts=int(doc.get("attempts", 0)), total=int(doc.get("total", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"trial.json: {exc!r}") from exc


class StartupAction(enum.Enum):
    NONE = "none"  # no trial
    WATCH = "watch"  # this is the new agent on trial
    CONCLUDED = "concluded"  # the trial ended while no new agent ran: report and clear


def on_start(trial: Trial | None, active_slot: str | None) -> StartupAction:
    if trial is None:
        return StartupAction.NONE
    return StartupAction.WATCH if active_slot == trial.new_slot else StartupAction.CONCLUDED


@dataclass(frozen=True, slots=True)
class Health:
    """What the new agent saw of itself.

    ``connected_for`` is the time since its first connection (birth sent), None
    before it; ``healthcheck_ok`` is None while the slot's probe has not run
    (or there is none).
    """

    connected_for: float | None
    job_failures: int
    healthcheck_ok: bool | None = None
    healthcheck_detail: str = ""


class Verdict(enum.Enum):
    WAIT = "wait"
    COMMIT = "commit"
    ROLL_BACK = "roll_back"


def judge(trial: Trial, health: Health, elapsed: float, *,
          connect_grace: float = CONNECT_GRACE) -> tuple[Verdict, str]:
    """Commit, roll back or keep watching; the second item says why (for ``detail``).

    ``elapsed`` counts from the new agent's start. A failing scheduler job or
    probe ends the trial at once; otherwise the agent must connect within
    ``connect_grace`` (at least the window) and then stay healthy for the window.
    """
    if health.job_failures:
        return Verdict.ROLL_BACK, f"{health.job_failures} scheduler job failures during the health window"
    if health.healthcheck_ok is False:
        return Verdict.ROLL_BACK, f"the slot's healthcheck failed: {health.healthcheck_detail}".strip()
    if health.connected_for is None:
        grace = max(connect_grace, trial.health_window_s)
        if elapsed < grace:
            return Verdict.WAIT, ""
        return Verdict.ROLL_BACK, f"no connection to the broker within {grace:g} s of starting"
    if health.connected_for < trial.health_window_s:
        return Verdict.WAIT, ""
    return Verdict.COMMIT, f"healthy for {trial.health_window_s:g} s after connecting"


def trial_outcome(trial: Trial, last_result: dict[str, Any] | None, time_ms: int) -> OtaProgress:
    """The outcome to report for a trial that ended without the new agent's verdict.

    ``last_result`` (``last_result.json``) is an OtaProgress document; ``outcome``
    is accepted for ``phase``, and missing fields come from the trial.
    """
    doc = dict(last_result or {})
    if doc.get("update_id") not in (None, trial.update_id):
        doc = {}  # a leftover from an earlier update: this trial's ending is unknown
    phase = doc.get("phase") or doc.get("outcome")
    if phase not in {p.value for p in TERMINAL_PHASES}:
        phase = Phase.ROLLED_BACK.value
    try:
        return OtaProgress(update_id=trial.update_id, phase=Phase(phase), version=trial.version,
                           received=trial.total, total=trial.total,
                           reason=str(doc.get("reason") or "trial_abandoned"),
                           detail=str(doc.get("detail") or f"back on {trial.previous_slot}; the new agent "
                                                           "never confirmed its health"),
                           slot=trial.previous_slot, time_ms=int(doc.get("time_ms") or time_ms))
    except (CodecError, ValueError, TypeError):
        return OtaProgress(update_id=trial.update_id, phase=Phase.ROLLED_BACK, version=trial.version,
                           received=trial.total, total=trial.total, reason="trial_abandoned",
                           detail=f"unreadable last_result.json; back on {trial.previous_slot}",
                           slot=trial.previous_slot, time_ms=time_ms)
