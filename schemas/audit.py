"""One security event for the audit log: who, what, why, when, seen by whom.

Audit records travel as compact UTF-8 JSON on ``{root}/_sys/audit/{source}``
(QoS 1, not retained; only coordinators may write ``_sys``) and are stored by
the coordinator in ``audit_events`` (schemas/FORMAT.md, "Audit log")::

    {"v": 1, "id": "2f1c9a0b7d3e4f5a", "time_ms": 1764000000000, "kind": "revocation",
     "subject": "cam-7", "reason": "quarantined", "source": "broker", "detail": "..."}

``id`` is unique per record (the store keeps the first copy of an id, so a
record that arrives twice, or that its writer stored and published, is
stored once). Unknown keys are ignored; another ``v`` is refused.

>>> rec = AuditRecord("a1", 1764000000000, AuditKind.REVOCATION, "cam-7", "quarantined", "broker")
>>> AuditRecord.decode(rec.encode()) == rec
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from schemas.errors import CodecError, UnsupportedVersion
from schemas.json_object import json_object

__all__ = ["AUDIT_VERSION", "MAX_AUDIT_BYTES", "AuditKind", "AuditRecord"]

AUDIT_VERSION = 1
#: Largest audit record accepted, in bytes.
MAX_AUDIT_BYTES = 8 * 1024
_LIMITS = {"id": 64, "subject": 128, "reason": 64, "source": 128, "detail": 2000}


class AuditKind(StrEnum):
    """What happened."""

    AUTH_FAILURE = "auth_failure"  # a CONNECT refused: wrong password, unknown or revoked user
    ACL_DENIED = "acl_denied"  # a publish or subscribe the ACL refused
    DEAD_LETTER = "dead_letter"  # the coordinator refused a message (reason: the dead letter's)
    QUARANTINE = "quarantine"  # a device was quarantined (PBFT decision)
    REVOCATION = "revocation"  # a device's broker credentials were revoked
    OTA_UPDATE = "ota_update"  # an agent accepted an update
    OTA_REFUSED = "ota_refused"  # an agent refused an update (reason: UpdateRefused.reason)


def _text(value: object, name: str, required: bool) -> str:
    if not isinstance(value, str):
        raise CodecError(f"audit record: {name} must be a string, not {type(value).__name__}")
    if required and not value:
        raise CodecError(f"audit record: {name} must not be empty")
    if len(value) > _LIMITS[name]:
        raise CodecError(f"audit record: {name} is longer than {_LIMITS[name]} characters")
    if name != "detail" and any(ch in value for ch in "\r\n\0"):
        raise CodecError(f"audit record: {name} must not contain a line break or NUL")
    return value


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One security event; every field is checked when the record is made."""

    id: str
    time_ms: int
    kind: AuditKind
    subject: str
    reason: str
    source: str
    detail: str = ""

    def __post_init__(self) -> None:
        if type(self.time_ms) is not int or self.time_ms < 0:
            raise CodecError(f"audit record: time_ms must be a non-negative integer, not {self.time_ms!r}")
        try:
            object.__setattr__(self, "kind", AuditKind(self.kind))
        except ValueError:
            raise CodecError(f"audit record: unknown kind {self.kind!r}") from None
        _text(self.id, "id", True)
        _text(self.subject, "subject", False)
        _text(self.reason, "reason", True)
        _text(self.source, "source", True)
        _text(self.detail, "detail", False)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"v": AUDIT_VERSION, "id": self.id, "time_ms": self.time_ms,
                               "kind": str(self.kind), "subject": self.subject, "reason": self.reason,
                               "source": self.source}
        if self.detail:
            doc["detail"] = self.detail
        return doc

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> AuditRecord:
        """A record from its JSON; CodecError for anything malformed or too large."""
        if len(data) > MAX_AUDIT_BYTES:
            raise CodecError(f"audit record of {len(data)} bytes is over {MAX_AUDIT_BYTES}")
        doc = json_object(data, "audit record")
        if doc.get("v") != AUDIT_VERSION:
            raise UnsupportedVersion(f"audit record version {doc.get('v')!r} (this reader knows "
                                     f"{AUDIT_VERSION})")
        try:
            return cls(id=doc["id"], time_ms=doc["time_ms"], kind=doc["kind"], subject=doc.get("subject", ""),
                       reason=doc["reason"], source=doc["source"], detail=doc.get("detail", ""))
        except KeyError as exc:
            raise CodecError(f"audit record: missing key {exc.args[0]!r}") from None
