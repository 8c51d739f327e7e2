"""When to ask the broker again for a subscription it refused (pure: no clock, no randomness).

A broker refuses a SUBSCRIBE for reasons that can pass: an ACL reloaded a
moment later, or a broker cluster (NATS with JetStream) regaining its quorum
after a node died. :class:`~broker.session.BusSession` therefore keeps a
refused filter's routes marked refused and sends the SUBSCRIBE again after a
pause that doubles with each refusal, from ``min_delay`` up to ``max_delay``,
each pause shortened by up to half at random so a fleet refused together does
not come back together. The caller passes the time and the random draw, so
the schedule is tested without a clock. A reconnect forgets everything (the
new connection subscribes every route anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RefusedSubscriptions", "Retry"]


@dataclass(frozen=True, slots=True)
class Retry:
    """What one refusal decided: which refusal in a row this is and when to ask again."""

    topic_filter: str
    refusals: int
    delay: float
    due: float


class RefusedSubscriptions:
    """The filters the broker refused on the live connection, each with its next try.

    >>> refused = RefusedSubscriptions(min_delay=1.0, max_delay=60.0)
    >>> refused.refused("a/#", now=100.0, draw=0.0)
    Retry(topic_filter='a/#', refusals=1, delay=1.0, due=101.0)
    >>> refused.due(100.5), refused.due(101.0)
    ([], ['a/#'])
    >>> refused.refused("a/#", now=101.0, draw=0.0).delay
    2.0
    >>> refused.granted("a/#"), refused.filters()
    (2, ())
    """

    def __init__(self, *, min_delay: float, max_delay: float) -> None:
        if not (math.isfinite(min_delay) and math.isfinite(max_delay) and 0 < min_delay <= max_delay):
            raise ValueError("subscription retry delays must satisfy 0 < min <= max (finite)")
        self.min_delay = min_delay
        self.max_delay = max_delay
        #: filter -> refusals in a row, and when the next SUBSCRIBE is due (None: one is in flight).
        self._refusals: dict[str, int] = {}
        self._due: dict[str, float | None] = {}

    def delay(self, refusals: int, draw: float) -> float:
        """The pause after the ``refusals``-th refusal in a row; ``draw`` in [0, 1) shortens it."""
        base = min(self.min_delay * 2.0 ** min(refusals - 1, 64), self.max_delay)
        return base * (1.0 - 0.5 * min(max(draw, 0.0), 1.0))

    def refused(self, topic_filter: str, *, now: float, draw: float) -> Retry:
        """The broker refused ``topic_filter`` (again): schedule the next SUBSCRIBE."""
        n = self._refusals.get(topic_filter, 0) + 1
        wait = self.delay(n, draw)
        self._refusals[topic_filter] = n
        self._due[topic_filter] = now + wait
        return Retry(topic_filter, n, wait, now + wait)

    def due(self, now: float) -> list[str]:
        """The filters whose pause is over; each is returned once, until refused again."""
        ready = [f for f, at in self._due.items() if at is not None and at <= now]
        for topic_filter in ready:
            self._due[topic_filter] = None
        return ready

    def granted(self, topic_filter: str) -> int:
        """The broker granted ``topic_filter``: forget it; returns how often it was refused before."""
        self._due.pop(topic_filter, None)
        return self._refusals.pop(topic_filter, 0)

    def forget(self, topic_filter: str) -> None:
        """Stop retrying ``topic_filter`` (unsubscribed)."""
        self.granted(topic_filter)

    def clear(self) -> None:
        """A new connection subscribes every route afresh: no back-off carries over."""
        self._refusals.clear()
        self._due.clear()

    def filters(self) -> tuple[str, ...]:
        """The filters refused and not granted since, sorted."""
        return tuple(sorted(self._refusals))

    def __bool__(self) -> bool:
        return bool(self._refusals)
