"""One update's download on disk: resumable after a crash, a reboot or a lost connection.

Chunks are written at their offsets in ``artifact.part`` (made full size,
sparse, up front) and the held-chunk bitmap is rewritten after each one. Only
completion is fsynced: after a crash the bitmap may claim a chunk whose bytes
never reached the disk, so on resume every claimed chunk is read back and
checked against its digest in the signed manifest, and a bad one is simply
asked for again. Fast when it matters (every chunk), careful when it is cheap
(once per resume).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from agents.ota.files import atomic_write, fsync_dir, remove_quietly
from schemas.errors import CodecError, UpdateFailed
from schemas.ota import Phase, SignedManifest, UpdateManifest

__all__ = ["ARTIFACT", "BITMAP", "BUNDLE", "MANIFEST", "PART", "SIGNATURE", "DownloadStore", "held"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PART = "artifact.part"
ARTIFACT = "artifact"
BITMAP = "bitmap"
BUNDLE = "bundle"
_READ = 1024 * 1024


def held(bitmap: bytes | bytearray, index: int) -> bool:
    """Bit ``index`` of a download bitmap (bit i of byte i // 8, least significant first)."""
    return bool(bitmap[index // 8] >> (index % 8) & 1)


def _full_bitmap(count: int) -> bytes:
    bits = bytearray(b"\xff" * ((count + 7) // 8))
    if count % 8:
        bits[-1] = (1 << (count % 8)) - 1
    return bytes(bits)


class DownloadStore:
    """The files of one update under ``{data_dir}/ota/{update_id}/`` (see agents.ota.files)."""

    def __init__(self, directory: Path, signed: SignedManifest) -> None:
        self.dir = directory
        self.signed = signed
        self.manifest: UpdateManifest = signed.manifest
        self._fd: int | None = None
        self._bitmap_fd: int | None = None

    @property
    def part(self) -> Path:
        return self.dir / PART

    @property
    def artifact(self) -> Path:
        return self.dir / ARTIFACT

    @property
    def bundle(self) -> Path:
        return self.dir / BUNDLE

    # -- opening -------------------------------------------------------

    def open(self) -> bytes | None:
        """Create or reopen the download; returns the verified bitmap to resume from (None: fresh)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        size = self.manifest.size
        if self.artifact.exists() and not self.part.exists():
            # Verified once, then the install was cut short: check it again rather than fetch it again.
            os.replace(self.artifact, self.part)
            (self.dir / BITMAP).write_bytes(_full_bitmap(self.manifest.chunk_count))
        fresh = not self.part.exists()
        if fresh:
            free = shutil.disk_usage(self.dir).free
            if size > free:
                raise UpdateFailed("disk_full", f"the update is {size} bytes; {free} are free in {self.dir}")
        self._fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)
        have = None if fresh else self._verified_bitmap()
        nbytes = (self.manifest.chunk_count + 7) // 8
        self._bitmap_fd = os.open(self.dir / BITMAP, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._bitmap_fd, have or bytes(nbytes), 0)
        os.ftruncate(self._bitmap_fd, nbytes)
        return have

    def _write_manifest(self) -> None:
        """Keep the signed bytes as received, so the download can be re-verified later."""
        path = self.dir / MANIFEST
        if not path.exists() or path.read_bytes() != self.signed.manifest_bytes:
            atomic_write(path, self.signed.manifest_bytes)
            sig = {"key_id": self.signed.key_id,
                   "signature": base64.b64encode(self.signed.signature).decode()}
            atomic_write(self.dir / SIGNATURE, json.dumps(sig).encode())
            for stale in (PART, BITMAP, ARTIFACT):  # another manifest under the same id: start over
                remove_quietly(self.dir / stale)

    def _verified_bitmap(self) -> bytes | None:
        """The saved bitmap minus the chunks whose bytes do not match their digest."""
        try:
            saved = (self.dir / BITMAP).read_bytes()
        except FileNotFoundError:
            return None
        m = self.manifest
        if len(saved) != (m.chunk_count + 7) // 8:
            logger.warning("update %s: bitmap has the wrong size; downloading again", m.update_id)
            return None
        bits = bytearray(saved)
        dropped = 0
        assert self._fd is not None
        for index in range(m.chunk_count):
            if not held(bits, index):
                continue
            offset, length = m.chunk_range(index)
            if hashlib.sha256(os.pread(self._fd, length, offset)).hexdigest() != m.chunk_sha256[index]:
                bits[index // 8] &= ~(1 << (index % 8))
                dropped += 1
        if m.chunk_count % 8:
            bits[-1] &= (1 << (m.chunk_count % 8)) - 1
        if dropped:
            logger.warning("update %s: %d chunks did not survive the restart; asking again",
                           m.update_id, dropped)
        return bytes(bits)

    # -- downloading -----------------------------------------------------

    def write_chunk(self, index: int, data: bytes, bitmap: bytes) -> None:
        """Write a verified chunk at its offset, then the bitmap that now includes it."""
        if self._fd is None or self._bitmap_fd is None:
            raise CodecError(f"download {self.manifest.update_id} is not open")
        offset, length = self.manifest.chunk_range(index)
        if len(data) != length:
            raise CodecError(f"chunk {index} is {len(data)} bytes, expected {length}")
        os.pwrite(self._fd, data, offset)
        os.pwrite(self._bitmap_fd, bitmap, 0)

    def finish(self) -> Path:
        """fsync, check the whole artifact's SHA-256, rename it to ``artifact``; its path."""
        if self._fd is None:
            raise CodecError(f"download {self.manifest.update_id} is not open")
        os.fsync(self._fd)
        digest = hashlib.sha256()
        for offset in range(0, self.manifest.size, _READ):
            digest.update(os.pread(self._fd, min(_READ, self.manifest.size - offset), offset))
        self.close()
        if digest.hexdigest() != self.manifest.sha256:
            self.discard()
            raise UpdateFailed("hash_mismatch", f"the artifact's SHA-256 is {digest.hexdigest()}, the "
                                                f"manifest says {self.manifest.sha256}", Phase.REFUSED)
        os.replace(self.part, self.artifact)
        remove_quietly(self.dir / BITMAP)
        fsync_dir(self.dir)
        return self.artifact

    def close(self) -> None:
        for fd in (self._fd, self._bitmap_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._bitmap_fd = None

    def discard(self) -> None:
        """Free the space (download, artifact, bundle); the manifest and any outcome stay."""
        self.close()
        for name in (PART, BITMAP, ARTIFACT):
            remove_quietly(self.dir / name)
        shutil.rmtree(self.bundle, ignore_errors=True)
