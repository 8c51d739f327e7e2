"""The receiving side of an OTA transfer: which chunks are held and which to ask for.

The device pulls: it asks for at most ``window`` chunks at a time and asks for
more as they arrive, so a slow link is never flooded and a lost chunk costs one
re-request, not a restart. Each chunk is checked against its digest in the
signed manifest before it counts as held, so a corrupt or forged chunk is never
kept. :attr:`Download.bitmap` is the whole state worth persisting: a device
that restarts resumes from it and never asks for a chunk it holds.

Pure: the caller owns the clock (it calls :meth:`Download.on_timeout` when no
chunk came for a while) and the file the chunks are written to.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator

from schemas.errors import CodecError
from schemas.ota import ChunkRequest, UpdateManifest

__all__ = ["ChunkOutcome", "Download"]


class ChunkOutcome(enum.Enum):
    """What :meth:`Download.on_chunk` made of a chunk."""

    ACCEPTED = "accepted"  # new and intact: write it
    DUPLICATE = "duplicate"  # already held: drop it
    CORRUPT = "corrupt"  # wrong length or digest: dropped, will be asked for again
    UNKNOWN = "unknown"  # another update's chunk, or an index out of range


class Download:
    """Receiver side: which chunks are held, which to ask for; windowed pull."""

    def __init__(self, manifest: UpdateManifest, *, window: int = 8, have: bytes | None = None) -> None:
        if type(window) is not int or window < 1:
            raise ValueError(f"window must be an integer >= 1, not {window!r}")
        self._manifest = manifest
        self._window = window
        total = manifest.chunk_count
        size = (total + 7) // 8
        if have is None:
            self._bits = bytearray(size)
        else:
            if not isinstance(have, bytes | bytearray) or len(have) != size:
                got = len(have) if isinstance(have, bytes | bytearray) else type(have).__name__
                raise CodecError(f"download bitmap of update {manifest.update_id!r} must be {size} bytes "
                                 f"for {total} chunks, not {got}")
            if total % 8 and have[-1] >> (total % 8):
                raise CodecError(f"download bitmap of update {manifest.update_id!r} marks chunks past "
                                 f"the last one ({total - 1})")
            self._bits = bytearray(have)
        self._received = sum(bin(byte).count("1") for byte in self._bits)
        self._outstanding: set[int] = set()
        # Missing chunks below the cursor that were asked for and must be asked for again.
        # Invariant: every index below _cursor is held, outstanding or in _retry.
        self._retry: set[int] = set()
        self._cursor = 0
        self._asked: set[int] = set()
        self._re_asked: set[int] = set()

    # -- state --------------------------------------------------------------------------

    @property
    def manifest(self) -> UpdateManifest:
        return self._manifest

    @property
    def window(self) -> int:
        return self._window

    @property
    def bitmap(self) -> bytes:
        """One bit per chunk, bit ``i % 8`` (LSB first) of byte ``i // 8``; persist it to resume."""
        return bytes(self._bits)

    @property
    def received(self) -> int:
        return self._received

    @property
    def total(self) -> int:
        return self._manifest.chunk_count

    @property
    def complete(self) -> bool:
        return self._received == self.total

    @property
    def outstanding(self) -> frozenset[int]:
        """Chunks asked for and not yet received."""
        return frozenset(self._outstanding)

    @property
    def re_requested(self) -> int:
        """How many distinct chunks were asked for more than once (lost, corrupt or slow)."""
        return len(self._re_asked)

    def holds(self, index: int) -> bool:
        return bool(self._bits[index >> 3] >> (index & 7) & 1)

    def missing(self) -> Iterator[int]:
        """The chunks not held, in order (outstanding ones included)."""
        return (i for i in range(self.total) if not self.holds(i))

    # -- events -------------------------------------------------------------------------

    def request(self) -> ChunkRequest | None:
        """Ask for missing chunks so that at most ``window`` are outstanding; None when nothing new."""
        room = self._window - len(self._outstanding)
        if room <= 0 or self.complete:
            return None
        wanted: list[int] = []
        for index in sorted(self._retry):
            if len(wanted) == room:
                break
            wanted.append(index)
        self._retry.difference_update(wanted)
        total = self.total
        while len(wanted) < room and self._cursor < total:
            index = self._cursor
            self._cursor += 1
            if not self.holds(index):
                wanted.append(index)
        if not wanted:
            return None
        for index in wanted:
            if index in self._asked:
                self._re_asked.add(index)
            else:
                self._asked.add(index)
        self._outstanding.update(wanted)
        return ChunkRequest(self._manifest.update_id, ChunkRequest.ranges_of(wanted))

    def on_chunk(self, index: int, data: bytes, *, update_id: str | None = None) -> ChunkOutcome:
        """Check and record one chunk; the caller writes ``data`` only when ACCEPTED.

        ``update_id``, when given, is the frame's: another update's chunk is UNKNOWN.
        A chunk that arrives unasked (late, after a timeout) is accepted if intact.
        """
        manifest = self._manifest
        if update_id is not None and update_id != manifest.update_id:
            return ChunkOutcome.UNKNOWN
        if type(index) is not int or not 0 <= index < manifest.chunk_count:
            return ChunkOutcome.UNKNOWN
        if self.holds(index):
            self._outstanding.discard(index)
            return ChunkOutcome.DUPLICATE
        _, length = manifest.chunk_range(index)
        if (not isinstance(data, bytes | bytearray | memoryview) or len(data) != length
                or hashlib.sha256(data).hexdigest() != manifest.chunk_sha256[index]):
            if index in self._outstanding:
                self._outstanding.discard(index)
                self._retry.add(index)
            return ChunkOutcome.CORRUPT
        self._bits[index >> 3] |= 1 << (index & 7)
        self._received += 1
        self._outstanding.discard(index)
        self._retry.discard(index)
        return ChunkOutcome.ACCEPTED

    def on_timeout(self) -> ChunkRequest | None:
        """No chunk came for a while: consider every outstanding chunk lost and ask again."""
        self._retry.update(self._outstanding)
        self._outstanding.clear()
        return self.request()
