"""The retained ``state/ota`` report: what an operator and ``edge-flash ota publish`` follow.

A version appears only after the offer's signature checked out: an offer refused
before that is reported with ``version`` :data:`UNVERIFIED_VERSION`.
Progress goes out on every phase change and at most once a second while
downloading; a terminal outcome is also written where a repeated offer of the
same update finds it (:mod:`agents.ota.outcome`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from agents.ota.files import OtaPaths
from agents.ota.outcome import write_outcome
from broker.session import BusSession
from schemas.errors import UpdateFailed, UpdateRefused
from schemas.ota import OtaProgress, Phase, UpdateManifest

__all__ = ["DETAIL_CHARS", "JSON", "PROGRESS_INTERVAL", "UNVERIFIED_VERSION", "ProgressReport", "failure_of",
           "wall_ms"]

logger = logging.getLogger(__name__)

JSON: Final = "application/json"
#: Seconds between two reports of the same download's progress.
PROGRESS_INTERVAL = 1.0
#: Longest ``detail`` a report carries (an install log's tail, a health check's words).
DETAIL_CHARS = 2000
#: The ``version`` of a refusal whose signature did not check out: the manifest's own claim is
#: not repeated on the retained state before a trusted key vouched for it.
UNVERIFIED_VERSION: Final = "unverified"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def failure_of(exc: BaseException) -> tuple[Phase, str, str]:
    """``(phase, reason, detail)`` of an update that ended with ``exc``."""
    if isinstance(exc, UpdateFailed):
        return exc.phase, exc.reason, exc.detail
    if isinstance(exc, UpdateRefused):
        return Phase.REFUSED, exc.reason, str(exc)
    if isinstance(exc, OSError):
        return Phase.FAILED, "io_error", str(exc)
    return Phase.FAILED, "install_failed", f"{type(exc).__name__}: {exc}"


class ProgressReport:
    """Builds :class:`OtaProgress` records and publishes them retained on ``state/ota``."""

    def __init__(self, session: BusSession, device: str, paths: OtaPaths, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.paths = paths
        self.topic = session.topics.state(device, "ota")
        self._clock = clock
        self._last_download = 0.0  # worker thread only

    def progress(self, m: UpdateManifest, phase: Phase, *, received: int = 0, reason: str | None = None,
                 detail: str | None = None, slot: str | None = None) -> OtaProgress:
        return OtaProgress(update_id=m.update_id, phase=phase, version=m.version, received=received,
                           total=m.chunk_count, reason=reason,
                           detail=detail[:DETAIL_CHARS] if detail is not None else None, slot=slot,
                           time_ms=wall_ms())

    def unverified(self, update_id: str, reason: str, detail: str) -> OtaProgress:
        """A refusal before the signature checked out: the offer's id, none of its other claims."""
        return OtaProgress(update_id=update_id, phase=Phase.REFUSED, version=UNVERIFIED_VERSION,
                           reason=reason, detail=detail[:DETAIL_CHARS], time_ms=wall_ms())

    def download(self, m: UpdateManifest, phase: Phase, received: int, *, force: bool = False) -> None:
        """A download's progress: at most once per :data:`PROGRESS_INTERVAL` unless ``force``."""
        now = self._clock()
        if not force and now - self._last_download < PROGRESS_INTERVAL:
            return
        self._last_download = now
        self.publish(self.progress(m, phase, received=received))

    def publish(self, progress: OtaProgress) -> None:
        if not self.session.publish(self.topic, progress.to_json_bytes(), qos=1, retain=True,
                                    content_type=JSON):
            logger.warning("outbox refused OTA progress %s of %s", progress.phase.value, progress.update_id)

    def conclude(self, m: UpdateManifest, phase: Phase, reason: str | None, detail: str | None) -> None:
        received = m.chunk_count if phase is Phase.COMMITTED else 0
        self.record(self.progress(m, phase, received=received, reason=reason, detail=detail))

    def fail(self, m: UpdateManifest, exc: BaseException) -> None:
        """Record and report an update that ended in failure."""
        phase, reason, detail = failure_of(exc)
        logger.error("update %s %s (%s): %s", m.update_id, phase.value, reason, detail)
        self.conclude(m, phase, reason, detail)

    def record(self, outcome: OtaProgress) -> None:
        """Write the terminal outcome where a repeated offer finds it, then report it."""
        try:
            write_outcome(self.paths.update_dir(outcome.update_id), outcome)
        except OSError as exc:
            logger.error("cannot record the outcome of update %s: %s", outcome.update_id, exc)
        self.publish(outcome)
