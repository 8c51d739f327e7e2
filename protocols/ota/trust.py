"""The signing keys a fleet trusts, and the check that an offered update was signed by one of them.

Pure (no files): ``edge-flash`` (firmware tools) writes and rotates the list,
agents verify every OTA offer against it; :func:`broker.trust.load_trusted`
reads it from a file. The list (``trusted_keys.json``) names every public key agents accept, newest
first; rotated-out keys stay listed with ``"status": "superseded"``, so an
update signed before a rotation still verifies on a device that already got the
new list, and one signed after it verifies once the new list (a "keys" update)
was delivered.

A compromised key is **revoked** (``"status": "revoked"``, ``edge-flash keys
revoke KEY_ID``): it stays listed so that agents refuse what it signed
(``UpdateRefused("revoked_key")``) even though the signature is valid, and
:func:`check_revocations_kept` refuses a later list that un-revokes or drops it,
so a list signed by the stolen key cannot undo the revocation once an agent
has it. The revocation travels as an ordinary signed "keys" update, signed
by the new active key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas.errors import ConfigError, UpdateRefused
from schemas.listing import few
from schemas.ota import SignedManifest, UpdateManifest

__all__ = ["KEY_STATUSES", "KeyRing", "TrustedKey", "check_revocations_kept", "key_id", "parse_trusted",
           "verify_offer"]

logger = logging.getLogger(__name__)

_FORMAT = 1
KEY_STATUSES = ("active", "superseded", "revoked")


def key_id(public: Ed25519PublicKey) -> str:
    """A short stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One entry of the rotation list."""

    id: str
    public_key: Ed25519PublicKey
    status: str  # "active", "superseded" or "revoked"
    created: str
    superseded: str | None = None
    revoked: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "public_key": base64.b64encode(_raw(self.public_key)).decode(),
                               "status": self.status, "created": self.created}
        for name in ("superseded", "revoked", "reason"):
            if getattr(self, name):
                doc[name] = getattr(self, name)
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str) -> TrustedKey:
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: each key must be an object")
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(doc["public_key"], validate=True))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: bad or missing public_key: {exc}") from exc
        status = doc.get("status", "active")
        if status not in KEY_STATUSES:
            raise ConfigError(f"{where}: status must be one of {', '.join(KEY_STATUSES)}, not {status!r}")
        if doc.get("id") != key_id(public):
            raise ConfigError(f"{where}: id {doc.get('id')!r} does not match its public key")
        return cls(id=key_id(public), public_key=public, status=status,
                   created=str(doc.get("created", "")), superseded=doc.get("superseded"),
                   revoked=doc.get("revoked"), reason=doc.get("reason"))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The rotation list: verify against any listed key."""

    keys: tuple[TrustedKey, ...]

    def find(self, kid: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.id == kid), None)

    def verify(self, kid: str, signature: bytes, data: bytes) -> bool:
        """True when ``kid`` is listed, not revoked, and its key made ``signature`` over ``data``."""
        key = self.find(kid)
        if key is None or key.status == "revoked":
            return False
        try:
            key.public_key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def to_bytes(self) -> bytes:
        doc = {"format": _FORMAT, "keys": [k.to_json() for k in self.keys]}
        return (json.dumps(doc, indent=2) + "\n").encode()


def parse_trusted(data: bytes, where: str) -> KeyRing:
    """A rotation list from bytes (a delivered "keys" update); ``where`` names it in errors."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("keys"), list):
        raise ConfigError(f"{where}: expected {{\"format\": {_FORMAT}, \"keys\": [...]}}")
    keys = tuple(TrustedKey.from_json(k, f"{where} keys[{i}]") for i, k in enumerate(doc["keys"]))
    if not keys:
        raise ConfigError(f"{where}: lists no keys")
    return KeyRing(keys)


def verify_offer(ring: KeyRing, signed: SignedManifest) -> UpdateManifest:
    """The offered manifest, once its signature checks out against ``ring``."""
    key = ring.find(signed.key_id)
    if key is None:
        known = few([k.id for k in ring.keys], "keys")
        raise UpdateRefused("unknown_key", f"update signed by key {signed.key_id[:64]!r}, which is not "
                                           f"trusted here (trusted: {known})")
    if key.status == "revoked":
        raise UpdateRefused("revoked_key", f"update {signed.manifest.update_id!r} is signed by key {key.id}, "
                                           f"which was revoked ({key.reason or 'no reason given'})")
    try:
        key.public_key.verify(signed.signature, signed.manifest_bytes)
    except InvalidSignature:
        raise UpdateRefused("bad_signature", f"the signature of update {signed.manifest.update_id!r} "
                                             f"does not verify with key {key.id}") from None
    if key.status != "active":
        logger.info("update %s is signed by superseded key %s; accepted", signed.manifest.update_id, key.id)
    return signed.manifest


def check_revocations_kept(current: KeyRing, new: KeyRing, where: str) -> None:
    """ConfigError when ``new`` lists a key ``current`` has revoked as anything but revoked, or drops it."""
    for key in current.keys:
        if key.status != "revoked":
            continue
        replacement = new.find(key.id)
        if replacement is None or replacement.status != "revoked":
            raise ConfigError(f"{where}: key {key.id} is revoked here and must stay listed as revoked")
