"""The OTA worker thread: the chunk pull of an offered update, and a clock for the trial.

Chunk frames from ``cmd/ota/chunk`` arrive on the network thread and are only
queued here; this worker verifies and writes them and asks for the next ones
with a :class:`~schemas.ota.ChunkRequest` on ``{root}/{device}/ota/want`` (at
most ``[ota] window`` in flight, asked again after ``request_timeout`` without a
chunk). A complete download goes to the installer, on this same thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

from agents.config import OtaConfig
from agents.ota.current import CurrentUpdate
from agents.ota.files import OtaPaths
from agents.ota.progress import JSON, ProgressReport
from agents.ota.store import DownloadStore
from broker.router import ReceivedMessage
from broker.session import BusSession
from protocols.ota.download import ChunkOutcome, Download
from schemas.errors import CodecError, UpdateFailed
from schemas.ota import ChunkRequest, Phase, SignedManifest, UpdateManifest, decode_chunk

__all__ = ["ActiveDownload", "DownloadWorker"]

logger = logging.getLogger(__name__)

_STOP: Final = object()


@dataclass(slots=True)
class ActiveDownload:
    """The download in progress (worker thread only)."""

    signed: SignedManifest
    store: DownloadStore
    download: Download
    last_chunk: float
    phase: Phase = Phase.DOWNLOADING

    @property
    def manifest(self) -> UpdateManifest:
        return self.signed.manifest


class DownloadWorker:
    """One thread that runs the queued OTA tasks, pulls chunks and ticks the trial clock.

    ``on_complete`` installs a complete download; ``on_tick`` gets the clock's
    reading after every task and at least every quarter second.
    """

    def __init__(self, session: BusSession, device: str, config: OtaConfig, paths: OtaPaths,
                 report: ProgressReport, current: CurrentUpdate, *,
                 on_complete: Callable[[ActiveDownload], None], on_tick: Callable[[float], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.device = device
        self.config = config
        self.paths = paths
        self.report = report
        self.current = current
        self.want_topic = session.topics.ota(device, "want")
        self._on_complete = on_complete
        self._on_tick_hook = on_tick
        self._clock = clock
        self._tick = min(0.25, config.request_timeout / 4)
        self._max_queued_chunks = 4 * config.window + 8
        self._tasks: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        self._queued_chunks = 0  # under the lock: the network thread adds, the worker takes
        self._active: ActiveDownload | None = None
        self._thread: threading.Thread | None = None
        self.chunks_total = 0
        self.bytes_total = 0
        self.corrupt_total = 0
        self.dropped_total = 0

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=f"edgebus-ota-{self.device}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._tasks.put(_STOP)
        thread.join(10.0)
        if thread.is_alive():
            logger.warning("the OTA worker was still busy at stop (an install?)")
        elif self._active is not None:
            self._active.store.close()

    def offer(self, signed: SignedManifest) -> None:
        """Start (or resume) downloading ``signed`` on the worker."""
        self._tasks.put(partial(self._activate, signed))

    def kick(self) -> None:
        """The same offer again: the server may have lost what it was sending, so ask afresh."""
        self._tasks.put(self._kick)

    # -- the network thread --------------------------------------------------

    def on_chunk_message(self, message: ReceivedMessage) -> None:
        with self._lock:
            if self._queued_chunks >= self._max_queued_chunks:
                self.dropped_total += 1  # asked for again after request_timeout
                return
            self._queued_chunks += 1
        self._tasks.put(partial(self._on_chunk, message.payload))

    # -- the worker thread ---------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self._tick)
            except queue.Empty:
                task = None
            if task is _STOP:
                return
            try:
                if callable(task):
                    task()
                self._on_tick()
            except Exception:
                logger.exception("OTA worker task failed")

    def _activate(self, signed: SignedManifest) -> None:
        m = signed.manifest
        if self._active is not None and self._active.manifest.update_id != m.update_id:
            logger.info("update %s supersedes %s (its download is kept for a later offer)", m.update_id,
                        self._active.manifest.update_id)
            self._active.store.close()
            self._active = None
        if self._active is not None:
            return
        store = DownloadStore(self.paths.update_dir(m.update_id), signed)
        try:
            have = store.open()
            download = Download(m, window=self.config.window, have=have)
        except (UpdateFailed, OSError, CodecError) as exc:
            store.close()
            self.current.forget(m.update_id)
            self.report.fail(m, exc)
            return
        active = ActiveDownload(signed, store, download, last_chunk=self._clock())
        self._active = active
        if have is not None:
            logger.info("update %s resumes with %d of %d chunks", m.update_id, download.received,
                        download.total)
        self._publish_download(active, force=True)
        if download.complete:
            self._complete(active)
        else:
            self._ask(download.request())

    def _kick(self) -> None:
        active = self._active
        if active is not None and active.phase is Phase.DOWNLOADING:
            self._ask(active.download.on_timeout())
            active.last_chunk = self._clock()

    def _on_chunk(self, payload: bytes) -> None:
        with self._lock:
            self._queued_chunks -= 1
        try:
            update_id, index, data = decode_chunk(payload)
        except CodecError as exc:
            self.corrupt_total += 1
            logger.warning("undecodable chunk frame dropped: %s", exc)
            return
        active = self._active
        if active is None or active.manifest.update_id != update_id or active.phase is not Phase.DOWNLOADING:
            logger.debug("chunk %d of update %s is not awaited; dropped", index, update_id)
            return
        outcome = active.download.on_chunk(index, data)
        active.last_chunk = self._clock()
        if outcome is ChunkOutcome.ACCEPTED:
            try:
                active.store.write_chunk(index, data, active.download.bitmap)
            except OSError as exc:
                self._abandon(active, UpdateFailed("io_error", f"cannot write the download: {exc}"))
                return
            self.chunks_total += 1
            self.bytes_total += len(data)
        elif outcome is ChunkOutcome.CORRUPT:
            self.corrupt_total += 1
            logger.warning("update %s: chunk %d does not match its digest; asking again", update_id, index)
        if active.download.complete:
            self._complete(active)
            return
        self._ask(active.download.request())
        self._publish_download(active)

    def _on_tick(self) -> None:
        active = self._active
        now = self._clock()
        if active is not None and active.phase is Phase.DOWNLOADING and \
                now - active.last_chunk >= self.config.request_timeout:
            request = active.download.on_timeout()
            if request is not None:
                logger.info("update %s: no chunk for %.1f s; asking again for %d chunks",
                            active.manifest.update_id, now - active.last_chunk,
                            sum(1 for _ in request.indexes()))
            self._ask(request)
            active.last_chunk = now
        self._on_tick_hook(now)

    def _ask(self, request: ChunkRequest | None) -> None:
        if request is not None and not self.session.publish(self.want_topic, request.to_json_bytes(), qos=1,
                                                            retain=False, content_type=JSON):
            logger.warning("outbox refused a chunk request; asking again after the timeout")

    def _publish_download(self, active: ActiveDownload, *, force: bool = False) -> None:
        self.report.download(active.manifest, active.phase, active.download.received, force=force)

    def _complete(self, active: ActiveDownload) -> None:
        try:
            self._on_complete(active)
        finally:
            self._active = None

    def _abandon(self, active: ActiveDownload, exc: UpdateFailed) -> None:
        active.store.discard()
        self._active = None
        self.current.forget()
        self.report.fail(active.manifest, exc)
