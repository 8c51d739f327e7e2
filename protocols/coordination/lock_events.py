"""Which lock-table events the leader tells clients about, and on whose reply topic.

Besides the per-session messages (:func:`publishable_events`), the leader
publishes every broken deadlock once as JSON on ``{root}/_sys/lock/{group}/events``
(:func:`deadlock_json`)::

    {"kind": "deadlock", "group": "site", "cycle": ["a", "b"], "locks": ["L2", "L1"],
     "victim": "b", "time_ms": 1700000000000, "leader": "n1"}

``cycle[i]`` waits for ``cycle[i + 1]`` (the last for the first) through
``locks[i]``; ``time_ms`` is the leader's clock stamped into the log entry
that closed the cycle, so ``(time_ms, cycle)`` identifies the event (a
leader change between applying and publishing can, rarely, lose or repeat one).
:func:`describe_deadlock` says the same in a line a person can read (a deadlock
victim's error, a two-phase commit transaction's abort reason).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from protocols.coordination.wire import LockEventMsg
from protocols.locks import DeadlockEvent, Granted, LockEvent, WaitCancelled

__all__ = ["deadlock_json", "describe_deadlock", "publishable_events"]


def publishable_events(events: Iterable[LockEvent]) -> Iterator[tuple[str, LockEventMsg]]:
    """``(session, message)`` for grants to waiters and cancelled waits; the rest stays internal."""
    for ev in events:
        if isinstance(ev, Granted):
            yield ev.session_id, LockEventMsg("granted", ev.lock_name, ev.token, ev.lease_deadline_ms)
        elif isinstance(ev, WaitCancelled):
            yield ev.session_id, LockEventMsg("cancelled", ev.lock_name, 0, 0, ev.reason.value)


def deadlock_json(ev: DeadlockEvent, group: str, leader: str) -> str:
    """The JSON body published on the group's events topic for one broken deadlock."""
    return json.dumps({"kind": "deadlock", "group": group, "cycle": list(ev.cycle), "locks": list(ev.locks),
                       "victim": ev.victim, "time_ms": ev.now_ms, "leader": leader})


def describe_deadlock(ev: DeadlockEvent) -> str:
    """One line from the victim's side: who waited for what behind whom, the victim's own wait first.

    >>> describe_deadlock(DeadlockEvent(("tx-a", "tx-b"), ("cam-8", "cam-7"), "tx-b", 0))
    'deadlock (victim tx-b): tx-b waits for cam-7 behind tx-a, tx-a waits for cam-8 behind tx-b'

    "Behind" because a waiter waits for the session just ahead of it in the
    lock's queue, which is the holder only when the waiter is first in line.
    """
    n = len(ev.cycle)
    start = ev.cycle.index(ev.victim)
    steps = [f"{ev.cycle[i % n]} waits for {ev.locks[i % n]} behind {ev.cycle[(i + 1) % n]}"
             for i in range(start, start + n)]
    return f"deadlock (victim {ev.victim}): " + ", ".join(steps)
