"""Frames from a camera, a stream, a video file or a folder of images, via OpenCV.

What ``source`` in a camera's configuration may be:

* an integer (or a string of digits, or ``/dev/videoN``): a V4L2 device;
* a URL (``rtsp://``, ``http://``, ``https://``, ...): a network stream;
* a directory: its image files (``.jpg .jpeg .png .bmp .webp .tif .tiff``) in
  name order;
* anything else: a video file.

Devices and streams are *live*: when a read fails the source is closed and
reopened with exponential backoff (``reconnect_min_delay`` doubling up to
``reconnect_max_delay``), because a camera that reboots or a flaky Wi-Fi link
should cost a gap, not the agent. Files and folders end instead (or start
again with ``loop = true``).

``fps`` bounds the frame rate handed on. A live source is read at its own pace
and the frames in between are grabbed without decoding and discarded (an
unread RTSP stream backs up and turns stale); a file or folder is played at
``fps``, or as fast as it decodes when ``fps = 0``. Each frame is stamped with
the injectable wall clock when it is read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agents.camera.config import CameraConfig
from agents.detectors.base import Frame
from schemas.errors import ConfigError, SourceUnavailable

__all__ = ["IMAGE_SUFFIXES", "CapturedFrame", "FrameReader", "FrameSource",
           "open_source", "wall_clock_ms"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: How long OpenCV's FFmpeg backend may wait to open or read a network stream before giving up.
STREAM_TIMEOUT_MS = 10_000
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def wall_clock_ms() -> int:
    """Milliseconds since the epoch (the default frame clock)."""
    return time.time_ns() // 1_000_000



@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One frame and when it was read; ``index`` counts the frames this source handed on."""

    image: Frame
    time_ms: int
    index: int


class FrameReader(Protocol):
    """The backend a :class:`FrameSource` paces and reopens: one OpenCV capture or a folder."""

    def open(self) -> None:
        """Open (or reopen) the source; raise :class:`SourceUnavailable` when it cannot."""

    def read(self) -> Frame | None:
        """The next decoded frame; None when the source ended or the stream dropped."""

    def skip(self) -> bool:
        """Move past one frame without decoding it; False when the source ended or dropped."""

    def close(self) -> None:
        """Release the device, socket or file."""


class CaptureReader:
    """A ``cv2.VideoCapture`` on a device index, a device path, a URL or a video file."""

    def __init__(self, target: int | str, *, stream: bool = False, device: bool = False) -> None:
        self.target = target
        self.stream = stream
        self.device = device
        self._cap: Any = None

    def open(self) -> None:
        import cv2

        self.close()
        if self.stream:
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        elif self.device:
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(str(self.target))
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailable(f"OpenCV cannot open {self.target!r}")
        if self.device:
            # Keep the driver's queue short so a grabbed frame is a recent one.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        return _as_bgr(image) if ok and image is not None else None

    def skip(self) -> bool:
        return self._cap is not None and bool(self._cap.grab())

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class FolderReader:
    """The images of a directory in name order; files that do not decode are skipped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._paths: list[Path] = []
        self._next = 0

    def open(self) -> None:
        try:
            paths = sorted(p for p in self.folder.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise SourceUnavailable(f"cannot list {self.folder}: {exc}") from exc
        if not paths:
            raise SourceUnavailable(f"{self.folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._paths = paths
        self._next = 0

    def read(self) -> Frame | None:
        import cv2

        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return _as_bgr(image)
            logger.warning("skipping %s: not a readable image", path)
        return None

    def skip(self) -> bool:
        if self._next >= len(self._paths):
            return False
        self._next += 1
        return True

    def close(self) -> None:
        self._paths = []
        self._next = 0


def _as_bgr(image: Any) -> Frame:
    """A contiguous uint8 BGR array, whatever depth and channel count OpenCV produced."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    elif array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


class FrameSource:
    """Paces a :class:`FrameReader`, stamps its frames, and reopens it when live.

    Iterate :meth:`frames` on one thread; :meth:`stop` from any thread ends the
    iteration within one read (or one backoff wait).
    """

    def __init__(
        self,
        reader: FrameReader,
        *,
        description: str,
        live: bool,
        loop: bool = False,
        fps: float = 0.0,
        clock_ms: Callable[[], int] = wall_clock_ms,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.reader = reader
        self.description = description
        self.live = live
        self.loop = loop
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self.clock_ms = clock_ms
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        #: Frames handed on, reopen attempts after a drop or failed open, and the last problem.
        self.frames_read = 0
        self.reconnects = 0
        self.ended = False
        self.last_error = ""

    def stop(self) -> None:
        """Make :meth:`frames` return soon (from any thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def frames(self) -> Generator[CapturedFrame, None, None]:
        """Frames until the source ends (files, folders) or :meth:`stop` is called."""
        try:
            yield from self._run()
        finally:
            self.reader.close()

    def _run(self) -> Iterator[CapturedFrame]:
        delay = self.reconnect_min_delay
        is_open = False
        read_since_open = 0
        next_due = self._monotonic()
        while not self._stop.is_set():
            if not is_open:
                try:
                    self.reader.open()
                except SourceUnavailable as exc:
                    self.last_error = str(exc)
                    if not self.live:
                        logger.error("camera source %s: %s", self.description, exc)
                        self.ended = True
                        return
                    logger.warning("camera source %s: %s; retrying in %.1f s",
                                   self.description, exc, delay)
                    self.reconnects += 1
                    if self._wait(delay):
                        return
                    delay = min(delay * 2, self.reconnect_max_delay)
                    continue
                is_open = True
                read_since_open = 0
            image: Frame | None = None
            now = self._monotonic()
            early = self.interval > 0 and now < next_due
            if early and self.live:
                if self.reader.skip():
                    continue  # a live source is drained between the frames it hands on
            else:
                if early:
                    if self._wait(next_due - now):
                        return
                    now = self._monotonic()
                image = self.reader.read()
            if image is None:
                # The frame was neither read nor skipped: the source ended or dropped.
                self.reader.close()
                is_open = False
                if self.live:
                    self.last_error = "stream dropped"
                    logger.warning("camera source %s dropped; reopening in %.1f s",
                                   self.description, delay)
                    self.reconnects += 1
                    if self._wait(delay):
                        return
                    delay = min(delay * 2, self.reconnect_max_delay)
                    continue
                if self.loop and read_since_open:
                    continue
                self.ended = True
                return
            read_since_open += 1
            delay = self.reconnect_min_delay
            if self.interval:
                # Keep the cadence, but after a stall catch up by one frame at most.
                next_due = max(next_due, now - self.interval) + self.interval
            yield CapturedFrame(image, self.clock_ms(), self.frames_read)
            self.frames_read += 1


def open_source(config: CameraConfig, *, clock_ms: Callable[[], int] = wall_clock_ms) -> FrameSource:
    """The source named by ``config.source``; a missing file or folder is a ConfigError."""
    source = config.source
    common: dict[str, Any] = {
        "fps": config.fps, "clock_ms": clock_ms, "loop": config.loop,
        "reconnect_min_delay": config.reconnect_min_delay,
        "reconnect_max_delay": config.reconnect_max_delay,
    }
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    if isinstance(source, int):
        return FrameSource(CaptureReader(source, device=True), description=f"device {source}",
                           live=True, **common)
    if source.startswith("/dev/video"):
        return FrameSource(CaptureReader(source, device=True), description=source, live=True,
                           **common)
    if _URL_RE.match(source):
        shown = re.sub(r"//[^/@]*@", "//***@", source)  # never log stream credentials
        return FrameSource(CaptureReader(source, stream=True), description=shown, live=True,
                           **common)
    path = Path(source).expanduser()
    if path.is_dir():
        return FrameSource(FolderReader(path), description=str(path), live=False, **common)
    if not path.is_file():
        raise ConfigError(f"camera {config.name} source: no such file or directory: {source!r}")
    return FrameSource(CaptureReader(str(path)), description=str(path), live=False, **common)
