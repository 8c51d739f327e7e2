"""The sending side of an OTA transfer: answer a device's chunk requests with frames.

The server keeps one :class:`ChunkServer` per device and update. It sends only
what is asked for, so the device's window paces the transfer, and it counts
what it sent so a rollout can report how much a flaky link cost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from schemas.errors import CodecError
from schemas.ota import ChunkRequest, UpdateManifest, encode_chunk

__all__ = ["ChunkServer"]

logger = logging.getLogger(__name__)


class ChunkServer:
    """Server side, per device: answers requests with chunk frames; counts bytes."""

    def __init__(self, manifest: UpdateManifest, read_chunk: Callable[[int], bytes]) -> None:
        self._manifest = manifest
        self._read_chunk = read_chunk
        self._sent: set[int] = set()
        self._resent: set[int] = set()
        self._bytes_sent = 0
        self._chunks_sent = 0

    @property
    def manifest(self) -> UpdateManifest:
        return self._manifest

    @property
    def bytes_sent(self) -> int:
        """Frame bytes handed out for publishing (chunk data plus a few bytes of framing)."""
        return self._bytes_sent

    @property
    def chunks_sent(self) -> int:
        """Frames handed out, resends included."""
        return self._chunks_sent

    @property
    def resent(self) -> int:
        """Distinct chunks sent more than once."""
        return len(self._resent)

    def on_request(self, request: ChunkRequest) -> list[tuple[int, bytes]]:
        """``(index, frame)`` for every asked-for chunk of this update, in order.

        Requests for another update and indexes past the last chunk are ignored.
        ``read_chunk`` must return the chunk's exact bytes; a chunk that does not
        match the manifest (the artifact changed on disk) raises :class:`CodecError`
        rather than feeding the device bytes it would refuse forever.
        """
        manifest = self._manifest
        if request.update_id != manifest.update_id:
            logger.debug("ignoring a chunk request for update %s (serving %s)", request.update_id,
                         manifest.update_id)
            return []
        frames: list[tuple[int, bytes]] = []
        count = manifest.chunk_count
        for start, end in request.ranges:
            for index in range(start, min(end, count)):
                data = self._read_chunk(index)
                _, length = manifest.chunk_range(index)
                if len(data) != length or hashlib.sha256(data).hexdigest() != manifest.chunk_sha256[index]:
                    raise CodecError(f"chunk {index} of update {manifest.update_id!r} does not match its "
                                     "manifest digest; was the artifact changed after signing?")
                frame = encode_chunk(manifest.update_id, index, data)
                if index in self._sent:
                    self._resent.add(index)
                else:
                    self._sent.add(index)
                self._chunks_sent += 1
                self._bytes_sent += len(frame)
                frames.append((index, frame))
        return frames
