"""A small scheduler: named jobs run every so many seconds on one background thread.

Tests drive it without a thread: inject a clock and call :meth:`Scheduler.run_due`.
A job that raises is logged and runs again at its next time; it never stops the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Job", "Scheduler"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """``action`` every ``interval_s`` seconds, first at ``next_at``."""

    name: str
    interval_s: float
    action: Callable[[], object]
    next_at: float
    runs: int = 0
    failures: int = 0


class Scheduler:
    """Runs due jobs in order of their due time; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, tick_s: float = 1.0) -> None:
        self._clock = clock
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.jobs: list[Job] = []

    def every(self, name: str, interval_s: float, action: Callable[[], object], *,
              first_after_s: float | None = None) -> Job:
        """Add a job; it first runs ``first_after_s`` (default ``interval_s``) from now."""
        if interval_s <= 0:
            raise ValueError(f"job {name!r}: interval must be positive, not {interval_s!r}")
        delay = interval_s if first_after_s is None else first_after_s
        job = Job(name, interval_s, action, self._clock() + delay)
        self.jobs.append(job)
        return job

    def run_due(self) -> int:
        """Run every job that is due now; how many ran."""
        now = self._clock()
        ran = 0
        for job in sorted((j for j in self.jobs if j.next_at <= now), key=lambda j: j.next_at):
            try:
                job.action()
            except Exception:
                job.failures += 1
                logger.exception("periodic job %s failed", job.name)
            job.runs += 1
            ran += 1
            # Skip missed turns rather than running a job back to back to catch up.
            job.next_at += job.interval_s
            if job.next_at <= now:
                job.next_at = now + job.interval_s
        return ran

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._run, name="coordinator-periodic", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.run_due()
