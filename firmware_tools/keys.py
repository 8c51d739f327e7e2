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
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The rotation list and its checks live in protocols.ota.trust (agents verify OTA offers with them),
# reading it from a file in broker.trust; re-exported here for the firmware tools and their callers.
from broker.trust import TRUSTED_KEYS, load_trusted
from protocols.ota.trust import KeyRing, TrustedKey, key_id
from schemas.errors import ConfigError

__all__ = ["PRIVATE_KEY", "PUBLIC_KEY", "TRUSTED_KEYS", "KeyRing", "TrustedKey", "init_keys",
           "key_id", "load_signing_key", "load_trusted", "revoke_key", "rotate_keys"]

logger = logging.getLogger(__name__)

PRIVATE_KEY = "signing.key"
PUBLIC_KEY = "signing.pub"


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def load_signing_key(keys_dir: Path, path: Path | None = None) -> Ed25519PrivateKey:
    """The current private key of a keys directory (or the key file ``path``, e.g. a retired one)."""
    path = path or keys_dir / PRIVATE_KEY
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


def revoke_key(keys_dir: Path, kid: str, reason: str) -> KeyRing:
    """Mark key ``kid`` revoked in ``keys_dir/trusted_keys.json``; agents then refuse what it signed.

    The active signing key cannot be revoked: rotate first (``edge-flash keys
    rotate``), then revoke the old key, and deliver the list as a "keys" update.
    """
    ring = load_trusted(keys_dir)
    key = ring.find(kid)
    if key is None:
        raise ConfigError(f"no key {kid!r} in {keys_dir / TRUSTED_KEYS} (listed: "
                          f"{', '.join(k.id for k in ring.keys)})")
    if key.status == "active":
        raise ConfigError(f"key {kid} is the active signing key: rotate first (edge-flash keys rotate), "
                          "then revoke it")
    revoked = TrustedKey(id=key.id, public_key=key.public_key, status="revoked", created=key.created,
                         superseded=key.superseded, revoked=key.revoked or _now(),
                         reason=key.reason or reason)
    new = KeyRing(tuple(revoked if k.id == kid else k for k in ring.keys))
    tmp = keys_dir / (TRUSTED_KEYS + ".tmp")
    tmp.write_bytes(new.to_bytes())
    tmp.replace(keys_dir / TRUSTED_KEYS)
    logger.warning("revoked signing key %s in %s (%s)", kid, keys_dir, reason)
    return new


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
