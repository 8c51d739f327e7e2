"""The audit log's writing side: make a :class:`schemas.audit.AuditRecord` and hand it to every sink.

An :class:`AuditLog` belongs to one observer (``source``: ``broker``, a
coordinator's id, an agent's device id) and fans each record out to its
sinks: the coordinator store (:meth:`coordinator.store.base.Store.record_audit`),
the bus (:class:`BusAuditSink`, ``{root}/_sys/audit/{source}`` at QoS 1), a
list in a test. A sink that fails is logged and skipped: an audit write must
never stop the broker from refusing a login or a coordinator from
dead-lettering a message. A flood cannot turn into an audit flood: records
with the same kind, subject and reason are kept at most once per
``min_interval_ms`` (default 1 s); the next one that passes says how many
were folded into it (``detail`` ends with ``[+N similar]``).

>>> seen = []
>>> log = AuditLog("broker", sinks=[seen.append], clock_ms=lambda: 5)
>>> log.record("revocation", "cam-7", "quarantined").time_ms, len(seen)
(5, 1)
>>> log.record("revocation", "cam-7", "quarantined") is None, log.suppressed  # within 1 s: folded
(True, 1)
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable

from broker.session import BusSession
from schemas.audit import AuditKind, AuditRecord
from schemas.errors import CodecError
from schemas.topics import TopicTree

__all__ = ["AUDIT_PROTOCOL", "AuditLog", "AuditSink", "BusAuditSink", "audit_filter", "audit_topic"]

logger = logging.getLogger(__name__)

AUDIT_PROTOCOL = "audit"
_MAX_KEYS = 4096

AuditSink = Callable[[AuditRecord], object]


def audit_topic(tree: TopicTree, source: str) -> str:
    """``{root}/_sys/audit/{source}``: where ``source`` publishes its audit records."""
    return tree.sys(AUDIT_PROTOCOL, source)


def audit_filter(tree: TopicTree) -> str:
    """Every source's audit records: ``{root}/_sys/audit/+``."""
    return f"{tree.root}/_sys/{AUDIT_PROTOCOL}/+"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditLog:
    """Record security events of one ``source`` and pass each to every sink (thread-safe)."""

    def __init__(self, source: str, sinks: Iterable[AuditSink] = (), *,
                 clock_ms: Callable[[], int] = _now_ms, min_interval_ms: int = 1000) -> None:
        self.source = source
        self._sinks = list(sinks)
        self._clock_ms = clock_ms
        self._min_interval_ms = min_interval_ms
        self._lock = threading.Lock()
        #: (kind, subject, reason) -> [time of the last record kept, records folded since]
        self._recent: dict[tuple[str, str, str], list[int]] = {}
        #: Records folded into a later one, in total.
        self.suppressed = 0

    def now_ms(self) -> int:
        return self._clock_ms()

    def add_sink(self, sink: AuditSink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def record(self, kind: AuditKind | str, subject: str, reason: str, detail: str = "", *,
               event_id: str | None = None, fold_any_reason: bool = False) -> AuditRecord | None:
        """Make one record (over-long text is cut to the record's limits) and deliver it; None when it
        was folded into the previous one of its kind, subject and reason (see the module docstring).

        ``event_id`` replaces the random id (a record derived from a fact that may be seen again);
        ``fold_any_reason`` folds by kind and subject alone, for reasons a device chooses.
        """
        kind, subject, reason = AuditKind(kind), _line(subject, 128), _line(reason, 64) or "unspecified"
        now = self._clock_ms()
        key = (str(kind), subject, "" if fold_any_reason else reason)
        with self._lock:
            recent = self._recent.get(key)
            if recent is not None and now - recent[0] < self._min_interval_ms:
                recent[1] += 1
                self.suppressed += 1
                return None
            folded = recent[1] if recent is not None else 0
            if len(self._recent) >= _MAX_KEYS:
                self._recent.clear()
            self._recent[key] = [now, 0]
        if folded:
            detail = f"{detail[:1980]} [+{folded} similar]".lstrip()
        rec = AuditRecord(id=event_id or secrets.token_hex(8), time_ms=now, kind=kind, subject=subject,
                          reason=reason, source=self.source, detail=detail[:2000])
        self.deliver(rec)
        return rec

    def deliver(self, rec: AuditRecord) -> None:
        """Hand an existing record to every sink (a failing sink is logged, the others still run)."""
        logger.info("audit: %s %s %s (%s)", rec.kind, rec.subject, rec.reason, rec.source)
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink(rec)
            except Exception:
                logger.exception("audit sink %r failed on record %s", sink, rec.id)


def _line(text: str, limit: int) -> str:
    return "".join(" " if ch in "\r\n\0" else ch for ch in text[:limit])


class BusAuditSink:
    """Publish each record on ``{root}/_sys/audit/{source}`` (QoS 1, through the session's outbox)."""

    def __init__(self, bus: BusSession) -> None:
        self._bus = bus

    def __call__(self, rec: AuditRecord) -> None:
        if not self._bus.publish(audit_topic(self._bus.topics, rec.source), rec.encode(), qos=1):
            logger.warning("audit record %s not published: the outbox is full", rec.id)


def decode_or_none(data: bytes) -> AuditRecord | None:
    """A received record, or None (logged) for a malformed one."""
    try:
        return AuditRecord.decode(data)
    except CodecError as exc:
        logger.warning("ignored a malformed audit record: %s", exc)
        return None
