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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from protocols.coordination.wire import LockEventMsg
from protocols.locks import DeadlockEvent, Granted, LockEvent, WaitCancelled

__all__ = ["deadlock_json", "publishable_events"]


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
