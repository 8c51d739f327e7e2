"""Which lock-table events the leader tells clients about, and on whose reply topic."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from broker.coordination.wire import LockEventMsg
from protocols.locks import Granted, LockEvent, WaitCancelled

__all__ = ["publishable_events"]


def publishable_events(events: Iterable[LockEvent]) -> Iterator[tuple[str, LockEventMsg]]:
    """``(session, message)`` for grants to waiters and cancelled waits; the rest stays internal."""
    for ev in events:
        if isinstance(ev, Granted):
            yield ev.session_id, LockEventMsg("granted", ev.lock_name, ev.token, ev.lease_deadline_ms)
        elif isinstance(ev, WaitCancelled):
            yield ev.session_id, LockEventMsg("cancelled", ev.lock_name, 0, 0, ev.reason.value)
