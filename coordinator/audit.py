"""The coordinator's audit trail: security events stored in ``audit_events`` and published.

:class:`AuditTrail` stores every audit record that arrives on
``{root}/_sys/audit/+`` (the embedded broker's refused logins and ACL
denials, revocations, other coordinators), and records what the coordinator
itself sees, each stored and published on ``{root}/_sys/audit/{source}``:

* **dead letters, by reason** - as an ingest sink: one record per device and
  reason in each batch, the count in ``detail``;
* **OTA outcomes** - a device's retained ``state/ota`` reaching ``committed``
  (``ota_update``) or ``refused`` (``ota_refused``, with the agent's reason:
  ``revoked_key``, ``bad_signature`` ...); the record id is derived from the
  device, update and phase, so the retained copy seen again after a restart
  is stored once;
* **quarantines** - :meth:`AuditTrail.quarantine`, for the PBFT quarantine.

The store keeps the first copy of a record id, so a record this coordinator
stores and also receives back from the bus is stored once.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter

from broker.audit import AuditLog, BusAuditSink, audit_filter, decode_or_none
from broker.router import ReceivedMessage
from broker.session import BusSession
from coordinator.ingest import IngestBatch
from coordinator.store.base import Store
from schemas.audit import AuditKind, AuditRecord
from schemas.errors import CodecError, EdgebusError, TopicError
from schemas.ota import OtaProgress, Phase

__all__ = ["AuditTrail"]

logger = logging.getLogger(__name__)

_OTA_KINDS = {Phase.COMMITTED: AuditKind.OTA_UPDATE, Phase.REFUSED: AuditKind.OTA_REFUSED}


class AuditTrail:
    """Store and publish security events (see the module docstring); an ingest sink."""

    def __init__(self, bus: BusSession, store: Store, source: str) -> None:
        self.bus = bus
        self.store = store
        self.log = AuditLog(source, sinks=[self._store, BusAuditSink(bus)])
        self.stored = 0
        bus.subscribe(audit_filter(bus.topics), self._on_audit, qos=1)
        bus.subscribe(f"{bus.topics.root}/+/state/ota", self._on_ota, qos=1)

    def attach(self, log: AuditLog) -> None:
        """Store and publish what ``log`` records too (an embedded broker's log, say)."""
        log.add_sink(self._store)
        log.add_sink(BusAuditSink(self.bus))

    def quarantine(self, device: str, reason: str, detail: str = "") -> AuditRecord | None:
        """Record that ``device`` was quarantined (the PBFT quarantine calls this)."""
        return self.log.record(AuditKind.QUARANTINE, device, reason, detail)

    def _store(self, rec: AuditRecord) -> bool:
        """Store ``rec`` unless its id is stored already; whether it was new."""
        try:
            new = self.store.record_audit(rec)
        except EdgebusError as exc:
            logger.warning("audit record %s not stored: %s", rec.id, exc)
            return False
        self.stored += new
        return new

    def _on_audit(self, message: ReceivedMessage) -> None:
        rec = decode_or_none(message.payload)
        if rec is not None:
            self._store(rec)

    def _on_ota(self, message: ReceivedMessage) -> None:
        try:
            device = self.bus.topics.parse(message.topic).device
            progress = OtaProgress.from_json_bytes(message.payload)
        except (CodecError, TopicError):
            return
        kind = _OTA_KINDS.get(progress.phase)
        if kind is None or device is None:
            return
        digest = hashlib.sha256(f"{device}\0{progress.update_id}\0{progress.phase}".encode()).hexdigest()
        # The id: once per device, update and outcome, also when the retained state comes again after a
        # restart. Folded by device alone: the reason is the device's to choose.
        self.log.record(kind, device, progress.reason or str(progress.phase),
                        f"update {progress.update_id}: {progress.detail or ''}",
                        event_id=f"ota-{digest[:24]}", fold_any_reason=True)

    def __call__(self, batch: IngestBatch) -> None:
        """Ingest sink: one ``dead_letter`` record per device and reason in the batch."""
        if not batch.dead_letters:
            return
        counts: Counter[tuple[str, str]] = Counter()
        for letter in batch.dead_letters:
            counts[(_device_of(self.bus.topics.root, letter.topic), letter.reason)] += 1
        for (device, reason), count in counts.items():
            self.log.record(AuditKind.DEAD_LETTER, device, reason, f"{count} message(s) dead-lettered")


def _device_of(root: str, topic: str) -> str:
    """The device level of ``topic`` (a dead letter's topic may be malformed: best effort)."""
    rest = topic[len(root) + 1:] if topic.startswith(root + "/") else topic
    return rest.split("/", 1)[0][:128]
