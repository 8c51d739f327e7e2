"""Ed25519 signing keys for bundles and updates, and the rotation list agents trust.

A keys directory holds::

    signing.key          the current private key (PEM, PKCS#8, mode 0600)
    signing.pub          its public key (raw, base64)
    trusted_keys.json    every public key agents accept, newest first; rotated-out
                         keys stay listed with ``"status": "superseded"``
    retired/<id>.key     private keys that were rotated out (0600), for the record

Agents accept a signature by any key in ``trusted_keys.json``, so devices that
still hold the old list keep accepting updates signed before a rotation, and a
bundle signed with the new key is accepted once the new list has been delivered.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.errors import ConfigError

__all__ = ["PRIVATE_KEY", "PUBLIC_KEY", "TRUSTED_KEYS", "KeyRing", "TrustedKey", "init_keys",
           "key_id", "load_signing_key", "load_trusted", "rotate_keys"]

logger = logging.getLogger(__name__)

PRIVATE_KEY = "signing.key"
PUBLIC_KEY = "signing.pub"
TRUSTED_KEYS = "trusted_keys.json"
_FORMAT = 1


def key_id(public: Ed25519PublicKey) -> str:
    """A short stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One entry of the rotation list."""

    id: str
    public_key: Ed25519PublicKey
    status: str  # "active" or "superseded"
    created: str
    superseded: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "public_key": base64.b64encode(_raw(self.public_key)).decode(),
                               "status": self.status, "created": self.created}
        if self.superseded:
            doc["superseded"] = self.superseded
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
        if status not in ("active", "superseded"):
            raise ConfigError(f"{where}: status must be 'active' or 'superseded', not {status!r}")
        if doc.get("id") != key_id(public):
            raise ConfigError(f"{where}: id {doc.get('id')!r} does not match its public key")
        return cls(id=key_id(public), public_key=public, status=status,
                   created=str(doc.get("created", "")), superseded=doc.get("superseded"))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The rotation list: verify against any listed key."""

    keys: tuple[TrustedKey, ...]

    def find(self, kid: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.id == kid), None)

    def verify(self, kid: str, signature: bytes, data: bytes) -> bool:
        """True when ``kid`` is listed and its key made ``signature`` over ``data``."""
        key = self.find(kid)
        if key is None:
            return False
        try:
            key.public_key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def to_bytes(self) -> bytes:
        doc = {"format": _FORMAT, "keys": [k.to_json() for k in self.keys]}
        return (json.dumps(doc, indent=2) + "\n").encode()


def load_trusted(path: Path) -> KeyRing:
    """Read a ``trusted_keys.json`` (or the one in a keys directory)."""
    if path.is_dir():
        path = path / TRUSTED_KEYS
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read trusted keys {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("keys"), list):
        raise ConfigError(f"{path}: expected {{\"format\": {_FORMAT}, \"keys\": [...]}}")
    keys = tuple(TrustedKey.from_json(k, f"{path} keys[{i}]") for i, k in enumerate(doc["keys"]))
    if not keys:
        raise ConfigError(f"{path}: lists no keys")
    return KeyRing(keys)


def load_signing_key(keys_dir: Path) -> Ed25519PrivateKey:
    """The current private key of a keys directory."""
    path = keys_dir / PRIVATE_KEY
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc} (run `edge-flash keys init`)") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return key


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)  # O_CREAT honours the umask; be explicit


def _write_public(keys_dir: Path, key: Ed25519PrivateKey, ring: KeyRing) -> None:
    (keys_dir / PUBLIC_KEY).write_text(base64.b64encode(_raw(key.public_key())).decode() + "\n")
    tmp = keys_dir / (TRUSTED_KEYS + ".tmp")
    tmp.write_bytes(ring.to_bytes())
    tmp.replace(keys_dir / TRUSTED_KEYS)


def init_keys(keys_dir: Path) -> str:
    """Create a fresh key pair and rotation list in ``keys_dir``; returns the key id."""
    if (keys_dir / PRIVATE_KEY).exists():
        raise ConfigError(f"{keys_dir / PRIVATE_KEY} already exists; use `edge-flash keys rotate`")
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    key = Ed25519PrivateKey.generate()
    _write_private(keys_dir / PRIVATE_KEY, key)
    entry = TrustedKey(id=key_id(key.public_key()), public_key=key.public_key(), status="active",
                       created=_now())
    _write_public(keys_dir, key, KeyRing((entry,)))
    logger.info("created signing key %s in %s", entry.id, keys_dir)
    return entry.id


def rotate_keys(keys_dir: Path) -> tuple[str, str]:
    """Replace the signing key; the old public key stays trusted as superseded.

    Returns (old id, new id).
    """
    old = load_signing_key(keys_dir)
    ring = load_trusted(keys_dir)
    old_id = key_id(old.public_key())
    retired = keys_dir / "retired"
    retired.mkdir(mode=0o700, exist_ok=True)
    (keys_dir / PRIVATE_KEY).replace(retired / f"{old_id}.key")
    new = Ed25519PrivateKey.generate()
    _write_private(keys_dir / PRIVATE_KEY, new)
    now = _now()
    kept = tuple(TrustedKey(id=k.id, public_key=k.public_key, status="superseded", created=k.created,
                            superseded=k.superseded or now) if k.status == "active" else k
                 for k in ring.keys)
    entry = TrustedKey(id=key_id(new.public_key()), public_key=new.public_key(), status="active", created=now)
    _write_public(keys_dir, new, KeyRing((entry, *kept)))
    logger.info("rotated signing key %s -> %s in %s", old_id, entry.id, keys_dir)
    return old_id, entry.id
