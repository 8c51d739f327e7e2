"""A small periodic scheduler that runs work by priority and sheds it under load.

The agent's main thread runs every periodic job (sampling, batching, state,
watchdog) from here. Each job has an interval and a priority; when the
:class:`~agents.shedding.SheddingPolicy` says a priority may not run, the job's
turn is skipped and counted (``shed``), so an overloaded Pi keeps its presence
and core metrics while losing, say, temperature sensors first. A job that
raises is logged and counted, never fatal: one broken sensor must not stop the
agent. Time is passed in, so tests drive it without sleeping.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.shedding import SheddingPolicy

__all__ = ["Job", "Scheduler"]

logger = logging.getLogger(__name__)


def _check_interval(name: str, interval: float) -> float:
    # NaN or inf would stop the job (or, NaN, break the loop's arithmetic): refuse them here,
    # whoever sets the interval, so a job with such an interval cannot exist.
    if isinstance(interval, bool) or not isinstance(interval, int | float) \
            or not math.isfinite(interval) or interval <= 0:
        raise ValueError(f"job {name!r} needs a finite positive interval, not {interval!r}")
    return float(interval)


@dataclass
class Job:
    name: str
    _interval: float
    priority: int
    run: Callable[[float], object]
    next_due: float = 0.0
    runs: int = 0
    shed: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        self._interval = _check_interval(self.name, self._interval)

    @property
    def interval(self) -> float:
        """Seconds between runs; always finite and positive (a bad value raises ValueError)."""
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        self._interval = _check_interval(self.name, value)


@dataclass
class Scheduler:
    policy: SheddingPolicy = field(default_factory=SheddingPolicy)
    jobs: list[Job] = field(default_factory=list)

    def add(self, name: str, interval: float, priority: int, run: Callable[[float], object],
            *, start: float = 0.0) -> Job:
        job = Job(name, interval, priority, run, next_due=start)
        self.jobs.append(job)
        # Most important first, so under a slow tick core work still goes first.
        self.jobs.sort(key=lambda j: j.priority)
        return job

    def run_due(self, now: float) -> float:
        """Run (or shed) every job that is due at ``now``; the time the next one is due."""
        for job in self.jobs:
            if now < job.next_due:
                continue
            # Skip missed turns instead of running a backlog: a sample late is a sample lost.
            periods = int((now - job.next_due) // job.interval) + 1
            job.next_due += periods * job.interval
            if not self.policy.allows(job.priority):
                job.shed += 1
                continue
            try:
                job.run(now)
                job.runs += 1
            except Exception:
                job.failures += 1
                logger.exception("job %s failed (%d failures so far)", job.name, job.failures)
        return min((j.next_due for j in self.jobs), default=now + 1.0)

    @property
    def shed_total(self) -> int:
        return sum(j.shed for j in self.jobs)

    @property
    def failures_total(self) -> int:
        return sum(j.failures for j in self.jobs)
