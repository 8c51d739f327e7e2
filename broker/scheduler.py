"""Periodic jobs: the one scheduler behind the agent's main loop and the coordinator's thread.

A :class:`Scheduler` holds named jobs, each run every ``interval`` seconds. The
caller passes the time to :meth:`Scheduler.run_due`, so tests drive it without
sleeping and without a thread. The agent calls it from its main loop;
:class:`SchedulerThread` is the thin wrapper that calls it on a background
thread with a clock (the coordinator's periodic jobs).

Rules every job follows:

* A job that raises is logged and counted, never fatal: one broken sensor or
  one failed retention pass must not stop the others.
* Missed turns are skipped, not run back to back: a sample late is a sample
  lost, and a catch-up burst is the last thing a loaded box needs. The job
  keeps its phase (its next turn is the first one after now).
* An interval is finite and positive, whoever sets it: NaN or inf would stop
  the job silently (or break the arithmetic of the loop that runs it).

Priorities and shedding are optional: give the scheduler a :class:`PriorityGate`
(the agent's :class:`~agents.shedding.SheddingPolicy`) and a job whose priority
it does not allow skips its turn, counted in ``shed``. Due jobs run most
important first (lowest priority number), then in order of their due time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Job", "PriorityGate", "Scheduler", "SchedulerThread"]

logger = logging.getLogger(__name__)


class PriorityGate(Protocol):
    """Says whether work of a priority may run now (0 is the most important)."""

    def allows(self, priority: int) -> bool: ...


def _checked_interval(name: str, interval: float) -> float:
    if isinstance(interval, bool) or not isinstance(interval, int | float) \
            or not math.isfinite(interval) or interval <= 0:
        raise ValueError(f"job {name!r} needs a finite positive interval, not {interval!r}")
    return float(interval)


class Job:
    """``run(now)`` every ``interval`` seconds from ``next_due``, with its counters.

    ``runs`` counts the turns it ran (failed ones too), ``failures`` those that
    raised, ``shed`` the turns a :class:`PriorityGate` skipped.
    """

    __slots__ = ("_interval", "failures", "name", "next_due", "priority", "run", "runs", "shed")

    def __init__(self, name: str, interval: float, run: Callable[[float], object], *,
                 next_due: float, priority: int = 0) -> None:
        self.name = name
        self._interval = _checked_interval(name, interval)
        self.run = run
        self.next_due = next_due
        self.priority = priority
        self.runs = 0
        self.shed = 0
        self.failures = 0

    @property
    def interval(self) -> float:
        """Seconds between turns; setting a non-finite or non-positive one raises ValueError."""
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        self._interval = _checked_interval(self.name, value)

    def __repr__(self) -> str:
        return (f"Job({self.name!r}, interval={self._interval}, priority={self.priority}, "
                f"next_due={self.next_due}, runs={self.runs}, shed={self.shed}, "
                f"failures={self.failures})")


class Scheduler:
    """Runs due jobs when told the time; see the module docstring."""

    def __init__(self, gate: PriorityGate | None = None) -> None:
        self.gate = gate
        self.jobs: list[Job] = []

    def add(self, name: str, interval: float, run: Callable[[float], object], *,
            start: float, priority: int = 0) -> Job:
        """Add a job that runs ``run(now)`` first at ``start``, then every ``interval`` seconds."""
        job = Job(name, interval, run, next_due=start, priority=priority)
        self.jobs.append(job)
        return job

    def run_due(self, now: float) -> int:
        """Run (or shed) every job due at ``now``; how many ran."""
        due = sorted((j for j in self.jobs if j.next_due <= now),
                     key=lambda j: (j.priority, j.next_due))
        ran = 0
        for job in due:
            missed = int((now - job.next_due) // job.interval)
            job.next_due += (missed + 1) * job.interval
            if self.gate is not None and not self.gate.allows(job.priority):
                job.shed += 1
                continue
            job.runs += 1
            ran += 1
            try:
                job.run(now)
            except Exception:
                job.failures += 1
                logger.exception("job %s failed (%d failures so far)", job.name, job.failures)
        return ran

    def next_due(self) -> float | None:
        """When the next job is due (None without jobs)."""
        return min((j.next_due for j in self.jobs), default=None)

    @property
    def shed_total(self) -> int:
        return sum(j.shed for j in self.jobs)

    @property
    def failures_total(self) -> int:
        return sum(j.failures for j in self.jobs)


class SchedulerThread:
    """A :class:`Scheduler` on a background thread that looks at ``clock`` every ``tick_s``.

    Its jobs take no arguments. Tests drive it without the thread: inject a
    clock and call :meth:`run_due`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, tick_s: float = 1.0,
                 name: str = "edgebus-scheduler") -> None:
        self.scheduler = Scheduler()
        self._clock = clock
        self._tick_s = tick_s
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def jobs(self) -> list[Job]:
        return self.scheduler.jobs

    def every(self, name: str, interval_s: float, action: Callable[[], object], *,
              first_after_s: float | None = None) -> Job:
        """Add a job; it first runs ``first_after_s`` (default ``interval_s``) from now."""
        delay = interval_s if first_after_s is None else first_after_s
        return self.scheduler.add(name, interval_s, lambda _now: action(),
                                  start=self._clock() + delay)

    def run_due(self) -> int:
        """Run every job that is due now; how many ran."""
        return self.scheduler.run_due(self._clock())

    def start(self) -> SchedulerThread:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.run_due()
