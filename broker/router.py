"""Subscription routing: which handlers a received message goes to.

A :class:`~broker.session.BusSession` subscribes to the union of the routes'
filters on every connection (paho and gmqtt do not resubscribe by themselves,
DESIGN.md section 8) and hands each received message to every route whose
filter matches its topic. Shared subscriptions (``$share/{group}/{filter}``)
match on the filter after the group.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.errors import SubscriptionRefused, TopicError
from schemas.topics import validate_topic_filter

__all__ = ["ReceivedMessage", "Route", "SubackState", "SubscriptionRouter", "topic_matches"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message as delivered by the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


Handler = Callable[[ReceivedMessage], None]


class SubackState:
    """Whether the broker acknowledged a route's filter on the live connection.

    The session marks it acknowledged or refused when that connection's SUBACK
    arrives, and pending again when the connection ends (the next connection
    subscribes anew), so a wait means "the broker routes this filter to us now".
    """

    __slots__ = ("_acknowledged", "_cond", "_refusal")

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._acknowledged = False
        self._refusal: str | None = None

    def mark_pending(self) -> None:
        with self._cond:
            self._acknowledged, self._refusal = False, None

    def mark_acknowledged(self) -> None:
        with self._cond:
            self._acknowledged, self._refusal = True, None
            self._cond.notify_all()

    def mark_refused(self, reason: str) -> None:
        with self._cond:
            self._acknowledged, self._refusal = False, reason
            self._cond.notify_all()

    def wait(self, topic_filter: str, timeout: float | None) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._acknowledged or self._refusal is not None, timeout)
            if self._refusal is not None:
                raise SubscriptionRefused(
                    f"the broker refused the subscription to {topic_filter!r}: {self._refusal}")
            return self._acknowledged


@dataclass(frozen=True, slots=True)
class Route:
    """A topic filter, the QoS to subscribe with, and who gets the matches."""

    topic_filter: str
    qos: int
    handler: Handler
    suback: SubackState = field(default_factory=SubackState, compare=False, repr=False)

    @property
    def match_filter(self) -> str:
        """The filter without a ``$share/{group}/`` prefix."""
        return strip_share(self.topic_filter)

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Block until the broker acknowledged this filter on the live connection.

        True once it did; False when ``timeout`` passed first (not connected, or
        no SUBACK yet). Raises :class:`~schemas.errors.SubscriptionRefused` when
        the broker refused it (e.g. its ACL). Do not call it on the session's
        network thread (a handler or an ``on_connect`` listener): the SUBACK is
        read by that thread, so the wait could only time out.
        """
        return self.suback.wait(self.topic_filter, timeout)


def strip_share(topic_filter: str) -> str:
    """``$share/g/a/+`` -> ``a/+``; other filters unchanged."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise TopicError(f"shared subscription {topic_filter!r} needs $share/GROUP/FILTER")
        return parts[2]
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching, including the rule that wildcards skip ``$`` topics.

    >>> topic_matches("edgebus/+/metrics", "edgebus/cam-1/metrics")
    True
    >>> topic_matches("edgebus/#", "edgebus")
    True
    >>> topic_matches("#", "$SYS/broker/uptime")
    False
    """
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


class SubscriptionRouter:
    """The session's routes; thread-safe to add and remove while connected.

    Which routes a topic matches is remembered per topic (a fleet's topics are
    a bounded set, read thousands of times a second), and forgotten whenever
    the routes change or more than :attr:`CACHE_TOPICS` topics were seen.
    """

    CACHE_TOPICS = 10_000

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._lock = threading.Lock()
        self._matches: dict[str, tuple[Route, ...]] = {}

    def add(self, topic_filter: str, handler: Handler, qos: int = 1) -> Route:
        validate_topic_filter(strip_share(topic_filter))
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        route = Route(topic_filter, qos, handler)
        with self._lock:
            self._routes.append(route)
            self._matches = {}
        return route

    def remove(self, route: Route) -> bool:
        """Drop ``route``; True when no other route still uses its filter."""
        with self._lock:
            self._routes.remove(route)
            self._matches = {}
            return all(r.topic_filter != route.topic_filter for r in self._routes)

    def routes(self) -> list[Route]:
        """Every route (a snapshot)."""
        with self._lock:
            return list(self._routes)

    def routes_for(self, topic_filter: str) -> list[Route]:
        """The routes that subscribe exactly ``topic_filter`` (a snapshot)."""
        with self._lock:
            return [r for r in self._routes if r.topic_filter == topic_filter]

    def subscriptions(self) -> list[tuple[str, int]]:
        """Each distinct filter once, with the highest QoS any route asked for."""
        best: dict[str, int] = {}
        with self._lock:
            for r in self._routes:
                best[r.topic_filter] = max(best.get(r.topic_filter, 0), r.qos)
        return list(best.items())

    def dispatch(self, message: ReceivedMessage) -> int:
        """Call every matching handler; a failing handler is logged, never fatal."""
        topic = message.topic
        routes = self._matches.get(topic)
        if routes is None:
            with self._lock:
                routes = tuple(r for r in self._routes if topic_matches(r.match_filter, topic))
                if len(self._matches) >= self.CACHE_TOPICS:
                    self._matches = {}
                self._matches[topic] = routes
        for route in routes:
            try:
                route.handler(message)
            except Exception:
                logger.exception("handler for %s failed on %s", route.topic_filter, message.topic)
        return len(routes)
