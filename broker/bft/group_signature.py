"""The group file's signature: who may be a replica is trusted configuration, signed like an update.

``edge-bus bft sign --group fleet.json --keys keys/`` writes ``fleet.json.sig``
with the fleet's signing key (the one ``edge-flash keys`` keeps, whose public
half agents already trust). It covers the SHA-256 of the group file and of the
``trusted_keys.json`` that file names (the replicas' public keys), so neither
can be swapped. Replicas, clients and the coordinator check it against a trust
root given on their own (``--trust``), never against keys the group file names.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.atomic_file import write_atomic
from broker.trust import load_trusted
from protocols.ota.trust import key_id
from schemas.errors import ConfigError

__all__ = ["SIGNATURE_SUFFIX", "sign_group", "verify_group"]

SIGNATURE_SUFFIX = ".sig"
_FORMAT = 1


def _signed_bytes(kid: str, group_sha: str, keys_sha: str) -> bytes:
    doc = {"format": _FORMAT, "key_id": kid, "group_sha256": group_sha, "trusted_keys_sha256": keys_sha}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _digests(group_path: Path, group_bytes: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(group_bytes)
        keys_path = group_path.parent / str(doc["trusted_keys"])
        keys_bytes = keys_path.read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{group_path}: cannot read the group file and its trusted_keys: {exc}") from exc
    return hashlib.sha256(group_bytes).hexdigest(), hashlib.sha256(keys_bytes).hexdigest()


def sign_group(group_path: Path, key: Ed25519PrivateKey) -> Path:
    """Write ``<group>.sig`` over the group file and its trusted keys; returns its path."""
    try:
        group_bytes = group_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read BFT group file {group_path}: {exc}") from exc
    group_sha, keys_sha = _digests(group_path, group_bytes)
    kid = key_id(key.public_key())
    sig = key.sign(_signed_bytes(kid, group_sha, keys_sha))
    doc = {"format": _FORMAT, "key_id": kid, "group_sha256": group_sha, "trusted_keys_sha256": keys_sha,
           "signature": base64.b64encode(sig).decode()}
    out = group_path.with_name(group_path.name + SIGNATURE_SUFFIX)
    write_atomic(out, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    return out


def verify_group(group_path: Path, group_bytes: bytes, trust: Path) -> str:
    """The signing key's id once ``<group>.sig`` verifies against ``trust``; ConfigError saying why not."""
    sig_path = group_path.with_name(group_path.name + SIGNATURE_SUFFIX)
    try:
        doc: Any = json.loads(sig_path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{group_path} is not signed (no {sig_path.name}); sign it with "
                          f"`edge-bus bft sign --group {group_path} --keys <edge-flash keys dir>`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the group file's signature {sig_path}: {exc}") from exc
    try:
        kid, signature = str(doc["key_id"]), base64.b64decode(doc["signature"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{sig_path}: not a group signature ({exc})") from exc
    ring = load_trusted(trust)
    group_sha, keys_sha = _digests(group_path, group_bytes)
    if not ring.verify(kid, signature, _signed_bytes(kid, group_sha, keys_sha)):
        why = ("is not in the trust root" if ring.find(kid) is None
               else "does not match the group file and its trusted_keys (changed since signing?)")
        raise ConfigError(f"{group_path}: signature refused: key {kid} {why} ({trust})")
    return kid
