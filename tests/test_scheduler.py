"""The one periodic scheduler (broker/scheduler.py), driven by an injected time."""

from __future__ import annotations

import math

import pytest

from broker.scheduler import Scheduler


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_a_job_with_a_non_finite_or_non_positive_interval_cannot_exist(bad: float) -> None:
    scheduler = Scheduler()
    with pytest.raises(ValueError, match="interval"):
        scheduler.add("sample", bad, lambda now: None, start=0.0)
    job = scheduler.add("sample", 1.0, lambda now: None, start=0.0)
    with pytest.raises(ValueError, match="interval"):
        job.interval = bad
    assert job.interval == 1.0
    assert scheduler.run_due(0.0) == 1
    assert scheduler.run_due(1.0) == 1 and job.runs == 2 and scheduler.next_due() == 2.0


def test_due_jobs_run_by_priority_then_due_time_and_keep_their_phase() -> None:
    scheduler = Scheduler()
    ran: list[tuple[str, float]] = []
    scheduler.add("late", 10.0, lambda now: ran.append(("late", now)), start=5.0)
    scheduler.add("early", 10.0, lambda now: ran.append(("early", now)), start=2.0)
    scheduler.add("first", 10.0, lambda now: ran.append(("first", now)), start=8.0, priority=-1)
    assert scheduler.next_due() == 2.0
    assert scheduler.run_due(9.0) == 3
    assert [name for name, _ in ran] == ["first", "early", "late"]
    # Turns missed since are skipped; each job keeps its phase (due at start + 10 k).
    ran.clear()
    assert scheduler.run_due(43.0) == 3 and len(ran) == 3
    assert sorted(j.next_due for j in scheduler.jobs) == [45.0, 48.0, 52.0]
    assert Scheduler().next_due() is None
