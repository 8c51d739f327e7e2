"""The thing an over-the-air update ships: the artifact's bytes and its signed manifest.

An ARTIFACT is a bundle directory (``edge-flash bundle`` output, or anything
with an ``install.sh`` and a signed ``manifest.json``) or a plain file (a
model, a ``trusted_keys.json``). A directory is checked with
:func:`~firmware_tools.manifest.verify_bundle` first, so a tampered bundle is
never signed again, and packed as a deterministic tar.gz (sorted names,
mtime 0, uid/gid 0, normalised modes): publishing the same bundle twice gives
the same bytes and the same SHA-256, which makes the digest in a manifest
something an operator can compare.

The manifest (:class:`schemas.ota.UpdateManifest`) carries the whole
artifact's SHA-256 and one digest per chunk; its canonical bytes are signed
with the keys directory's current Ed25519 key.
"""

from __future__ import annotations

import datetime
import gzip
import io
import logging
import re
import stat
import tarfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.keys import key_id, load_signing_key, load_trusted
from firmware_tools.manifest import verify_bundle
from schemas.errors import CodecError, ConfigError
from schemas.ota import DEFAULT_CHUNK_SIZE, MAX_ARTIFACT_BYTES, UPDATE_KINDS, SignedManifest, UpdateManifest

__all__ = ["AGENT_ARTIFACT_NAME", "DEVICE_ONLY", "Artifact", "build_artifact", "new_update_id",
           "pack_directory", "sign_manifest"]

logger = logging.getLogger(__name__)

AGENT_ARTIFACT_NAME = "edgebus-agent"
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class Artifact:
    """The bytes to send and the signed manifest that describes them."""

    data: bytes
    signed: SignedManifest
    source: Path

    @property
    def manifest(self) -> UpdateManifest:
        return self.signed.manifest

    def read_chunk(self, index: int) -> bytes:
        offset, length = self.manifest.chunk_range(index)
        return self.data[offset:offset + length]


#: Files of a bundle that belong to the one device it was built for: a group update must not
#: carry them (agent.toml holds that device's identity and broker credentials; an OTA install
#: keeps every device's own configuration).
DEVICE_ONLY = frozenset({"agent.toml"})


def pack_directory(root: Path, leave_out: frozenset[str] = frozenset()) -> bytes:
    """``root`` as a reproducible tar.gz without ``leave_out`` (relative paths); symlinks and
    special files are refused."""
    buf = io.BytesIO()
    # gzip's header holds a time and a file name: fix both, or equal trees give different bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=6, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
            rel = path.relative_to(root).as_posix()
            if rel in leave_out:
                logger.info("left out %s: it belongs to the device the bundle was built for", rel)
                continue
            st = path.lstat()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                raise ConfigError(f"{path}: only regular files and directories can be shipped "
                                  "(a symlink or device file would not survive the trip)")
    return buf.getvalue()


def new_update_id(kind: str, version: str) -> str:
    """Unique per publish, and readable in logs: ``agent-2.0-20250101T120000Z-1a2b3c4d``."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{kind}-{_NOT_NAME.sub('_', version)[:48]}-{stamp}-{uuid.uuid4().hex[:8]}"


def sign_manifest(manifest: UpdateManifest, key: Ed25519PrivateKey) -> SignedManifest:
    """Sign exactly the bytes that travel (the canonical JSON)."""
    data = manifest.to_bytes()
    return SignedManifest(data, key_id(key.public_key()), key.sign(data))


def signing_key_for(kind: str, keys_dir: Path) -> Ed25519PrivateKey:
    """The key that signs an update of ``kind``.

    A ``keys`` update delivers the rotation list, so after ``edge-flash keys rotate``
    it must be signed by the key the devices still trust: the one just rotated out
    (``retired/<id>.key`` of the newest superseded entry). Every other update, and a
    keys update before any rotation, is signed with the current key.
    """
    if kind == "keys":
        for entry in load_trusted(keys_dir).keys:
            retired = keys_dir / "retired" / f"{entry.id}.key"
            if entry.status == "superseded" and retired.is_file():
                logger.info("signing the key list with %s, the key devices trusted before the rotation",
                            entry.id)
                return load_signing_key(keys_dir, retired)
    return load_signing_key(keys_dir)


def _artifact_bytes(path: Path, keys_dir: Path) -> bytes:
    if path.is_dir():
        verify_bundle(path, load_trusted(keys_dir))  # BundleInvalid: never re-sign a tampered bundle
        if not (path / "install.sh").is_file():
            raise ConfigError(f"{path} has no install.sh: it is not an agent bundle")
        return pack_directory(path, DEVICE_ONLY)
    try:
        size = path.stat().st_size
        if size > MAX_ARTIFACT_BYTES:
            raise ConfigError(f"{path} is {size} bytes; updates are at most {MAX_ARTIFACT_BYTES}")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"artifact {path} does not exist") from exc


def _default_name(path: Path, kind: str) -> str:
    if kind == "agent":
        return AGENT_ARTIFACT_NAME
    return _NOT_NAME.sub("_", path.name)[:128] or kind


def build_artifact(path: Path, *, kind: str, version: str, keys_dir: Path,
                   chunk_size: int = DEFAULT_CHUNK_SIZE, health_window_s: float = 60.0,
                   update_id: str | None = None, name: str | None = None,
                   requires: Mapping[str, Any] | None = None, created: str | None = None) -> Artifact:
    """Read (or pack) ``path``, describe it in a manifest and sign that; ConfigError on bad input."""
    if kind not in UPDATE_KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(UPDATE_KINDS)}, not {kind!r}")
    if kind == "agent" and not path.is_dir():
        raise ConfigError(f"an agent update is a bundle directory; {path} is not a directory")
    if kind != "agent" and path.is_dir():
        raise ConfigError(f"a {kind} update is a single file; {path} is a directory")
    key = signing_key_for(kind, keys_dir)
    data = _artifact_bytes(path, keys_dir)
    if not data:
        raise ConfigError(f"artifact {path} is empty")
    bundle_version = path / "VERSION"
    if path.is_dir() and bundle_version.is_file() and bundle_version.read_text().strip() != version:
        logger.warning("%s says version %r, the update is published as %r",
                       bundle_version, bundle_version.read_text().strip(), version)
    created = created or datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    try:
        manifest = UpdateManifest.for_artifact(
            data, update_id=update_id or new_update_id(kind, version), kind=kind,
            name=name or _default_name(path, kind), version=version, chunk_size=chunk_size,
            created=created, requires=requires, health_window_s=health_window_s)
    except CodecError as exc:
        raise ConfigError(f"cannot describe {path} as an update: {exc}") from exc
    signed = sign_manifest(manifest, key)
    logger.info("artifact %s: %d bytes in %d chunks, sha256 %s, update %s signed by %s",
                path, manifest.size, manifest.chunk_count, manifest.sha256, manifest.update_id, signed.key_id)
    return Artifact(data, signed, path)
