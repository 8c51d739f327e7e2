"""The bundle manifest: every file with its SHA-256 and size, signed with Ed25519.

``manifest.json`` is written once and its exact bytes are signed; ``manifest.sig``
holds ``{"key_id": ..., "signature": base64}``. Verification checks the signature
against a rotation list (:mod:`firmware_tools.keys`), then every listed file, and
refuses files that are not listed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.keys import KeyRing, key_id
from schemas.errors import BundleInvalid

__all__ = ["MANIFEST", "SIGNATURE", "file_digest", "verify_bundle", "write_manifest"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_FORMAT = 1
_CHUNK = 1 << 20



def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in (MANIFEST, SIGNATURE):
            yield path


def write_manifest(root: Path, key: Ed25519PrivateKey, meta: Mapping[str, Any]) -> dict[str, Any]:
    """List and hash every file under ``root``, write and sign the manifest; returns it."""
    files = [{"path": p.relative_to(root).as_posix(), "sha256": file_digest(p), "size": p.stat().st_size}
             for p in _files(root)]
    manifest = {"format": _FORMAT, **meta, "files": files}
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (root / MANIFEST).write_bytes(data)
    sig = {"key_id": key_id(key.public_key()), "signature": base64.b64encode(key.sign(data)).decode()}
    (root / SIGNATURE).write_text(json.dumps(sig) + "\n")
    logger.info("manifest of %s: %d files, signed by %s", root, len(files), sig["key_id"])
    return manifest


def _safe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts


def verify_bundle(root: Path, ring: KeyRing) -> dict[str, Any]:
    """Check ``root``'s signature and every file; raise :class:`BundleInvalid` at the first problem."""
    try:
        data = (root / MANIFEST).read_bytes()
        sig = json.loads((root / SIGNATURE).read_text())
        signature = base64.b64decode(sig["signature"], validate=True)
        kid = str(sig["key_id"])
    except OSError as exc:
        raise BundleInvalid(f"{root}: cannot read manifest or signature: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleInvalid(f"{root / SIGNATURE}: malformed: {exc}") from exc
    if ring.find(kid) is None:
        raise BundleInvalid(f"{root}: signed by key {kid}, which is not in the trusted keys "
                            f"({', '.join(k.id for k in ring.keys)})")
    if not ring.verify(kid, signature, data):
        raise BundleInvalid(f"{root / MANIFEST}: signature does not match (manifest altered?)")
    manifest = json.loads(data)
    listed: set[str] = set()
    for entry in manifest["files"]:
        rel = entry["path"]
        if not _safe(rel):
            raise BundleInvalid(f"{root}: manifest lists an unsafe path {rel!r}")
        listed.add(rel)
        path = root / rel
        if not path.is_file():
            raise BundleInvalid(f"{root}: {rel} is listed but missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise BundleInvalid(f"{root}: {rel} has {size} bytes, manifest says {entry['size']}")
        if file_digest(path) != entry["sha256"]:
            raise BundleInvalid(f"{root}: {rel} SHA-256 mismatch")
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            raise BundleInvalid(f"{root}: {rel} is not listed in the manifest")
    logger.info("%s verified: %d files, key %s", root, len(listed), kid)
    return dict(manifest)
