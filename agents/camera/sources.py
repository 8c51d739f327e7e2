"""Frames from a camera, a stream, a video file or a folder of images, via OpenCV.

What ``source`` in a camera's configuration may be:

* an integer (or a string of digits, or ``/dev/videoN``): a V4L2 device;
* a URL (``rtsp://``, ``http://``, ``https://``, ...): a network stream;
* a directory: its image files (``.jpg .jpeg .png .bmp .webp .tif .tiff``) in
  name order;
* anything else: a video file.

Devices and streams are *live*: when a read fails the source is closed and
reopened with exponential backoff (``reconnect_min_delay`` doubling up to
``reconnect_max_delay``, 5 s by default), because a camera that reboots or a
flaky Wi-Fi link should cost a gap, not the agent. Files and folders end
instead (or start again with ``loop = true``).

Every change of the source's :class:`~schemas.camera_health.SourceState`
(connecting, streaming, reconnecting, failed, ended) goes to the ``on_state``
listener, on the thread iterating :meth:`FrameSource.frames`, in order with
the frames: a drop is reported after the last frame before it, a recovery
before the first frame after it. One warning marks the start of an outage
and one line its end ("streaming again after 12.3 s"); OpenCV's and FFmpeg's
own console messages are silenced (see :func:`quiet_opencv`), and why a
stream cannot be opened is found out with a plain TCP connection instead.

``fps`` bounds the frame rate handed on. A live source is read at its own pace
and the frames in between are grabbed without decoding and discarded (an
unread RTSP stream backs up and turns stale); a file or folder is played at
``fps``, or as fast as it decodes when ``fps = 0``. Each frame is stamped with
the injectable wall clock when it is read.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from agents.camera.config import CameraConfig
from agents.detectors.base import Frame
from schemas.camera_health import SourceState
from schemas.errors import ConfigError, SourceUnavailable

__all__ = ["IMAGE_SUFFIXES", "CapturedFrame", "FrameReader", "FrameSource", "StateListener",
           "open_source", "quiet_opencv", "unreachable_reason", "wall_clock_ms"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: How long OpenCV's FFmpeg backend may wait to open or read a network stream before giving
#: up: a cut cable shows as an outage after this long (a killed server at once).
STREAM_TIMEOUT_MS = 5_000
#: How long the TCP probe that explains a failed open may take.
PROBE_TIMEOUT_S = 2.0
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}
#: Called with the new state and the last error ("" when there is none).
StateListener = Callable[[SourceState, str], None]
_quiet_lock = threading.Lock()
_quieted = False


def wall_clock_ms() -> int:
    """Milliseconds since the epoch (the default frame clock)."""
    return time.time_ns() // 1_000_000


def quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's console messages, once per process, before the first capture.

    Both write straight to the process's stderr (``[ WARN:0@4.8] global cap.cpp ...``,
    ``[tcp @ 0x55...] Connection refused``), a line per reconnect attempt, past the
    agent's logging. The agent logs the outage itself, with the reason found by
    :func:`unreachable_reason`. An operator who wants them back sets
    ``OPENCV_LOG_LEVEL`` / ``OPENCV_FFMPEG_LOGLEVEL`` (left alone when set), or runs
    with debug logging for this module.
    """
    global _quieted
    with _quiet_lock:
        if _quieted:
            return
        _quieted = True
        if logger.isEnabledFor(logging.DEBUG):
            return
        import cv2

        # FFmpeg's log level is read from the environment when OpenCV first opens a
        # capture with it; -8 is AV_LOG_QUIET.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        if "OPENCV_LOG_LEVEL" not in os.environ:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def unreachable_reason(url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """Why a stream at ``url`` may not open, from one TCP connection to its host and port.

    OpenCV only says that it could not open a stream; FFmpeg's reason went to the
    console. "connection refused" (the server is down), "timed out" (a cut link)
    and a name that does not resolve are what an operator needs to know; when
    the port answers the problem is the path, the codec or the credentials.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return "the URL does not parse"
    if not host or port is None:
        return "no host or port in the URL to try"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    except TimeoutError:
        return f"{host}:{port} did not answer within {timeout:g} s"
    except OSError as exc:
        return f"{host}:{port}: {(exc.strerror or str(exc)).lower()}"
    return f"{host}:{port} accepts connections, but no stream opened there (path, codec, credentials?)"



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

        quiet_opencv()
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
            if self.stream:
                raise SourceUnavailable(f"cannot open the stream: {unreachable_reason(str(self.target))}")
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
    iteration within one read (or one backoff wait). ``on_state`` hears every
    change of :attr:`state`, on the iterating thread.
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
        reconnect_max_delay: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self.reader = reader
        self.description = description
        self.live = live
        self.loop = loop
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self.clock_ms = clock_ms
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.on_state = on_state
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        #: Frames handed on, reopen attempts after a drop or failed open, and the last problem.
        self.frames_read = 0
        self.reconnects = 0
        #: Outages of a live source: drops, and a first open that failed.
        self.outages = 0
        self.ended = False
        self.last_error = ""
        self.state = SourceState.CONNECTING
        self._state_error = ""
        self._outage_began: float | None = None
        self._outage_attempts = 0

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

    def _set_state(self, state: SourceState, error: str = "") -> None:
        if state is self.state and error == self._state_error:
            return
        self.state = state
        self._state_error = error
        if error:
            self.last_error = error
        if self.on_state is not None:
            self.on_state(state, error)

    def _outage(self, error: str, delay: float) -> bool:
        """Note a failed open or a drop of a live source; False when stopped during the wait."""
        now = self._monotonic()
        first = self._outage_began is None
        if first:
            self._outage_began = now
            self.outages += 1
        if first or error != self._state_error:
            logger.warning("camera source %s: %s; retrying in %.1f s (back-off up to %.1f s)",
                           self.description, error, delay, self.reconnect_max_delay)
        else:
            logger.debug("camera source %s: %s; retrying in %.1f s", self.description, error, delay)
        self._set_state(SourceState.RECONNECTING, error)
        self.reconnects += 1
        self._outage_attempts += 1
        return not self._wait(delay)

    def _recovered(self) -> None:
        if self._outage_began is not None:
            logger.info("camera source %s streaming again after %.1f s (%d attempts)",
                        self.description, self._monotonic() - self._outage_began,
                        self._outage_attempts)
            self._outage_began = None
            self._outage_attempts = 0
        self._set_state(SourceState.STREAMING)

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
                    if not self.live:
                        logger.error("camera source %s: %s", self.description, exc)
                        self.ended = True
                        self._set_state(SourceState.FAILED, str(exc))
                        return
                    if not self._outage(str(exc), delay):
                        return
                    delay = min(delay * 2, self.reconnect_max_delay)
                    continue
                is_open = True
                read_since_open = 0
                # Pacing starts afresh: an open can take seconds, and catching up on them
                # would hand on two frames stamped a millisecond apart.
                next_due = self._monotonic()
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
                    if not self._outage("stream dropped" if read_since_open else
                                        "stream opened but sent no frame", delay):
                        return
                    delay = min(delay * 2, self.reconnect_max_delay)
                    continue
                if self.loop and read_since_open:
                    continue
                self.ended = True
                if read_since_open or self.frames_read:
                    self._set_state(SourceState.ENDED)
                else:
                    self._set_state(SourceState.FAILED, "no frame could be read")
                return
            if not read_since_open:
                self._recovered()
            read_since_open += 1
            delay = self.reconnect_min_delay
            if self.interval:
                # Keep the cadence, but after a stall catch up by half a frame at most: a
                # burst of buffered frames must not come out milliseconds apart. Counted
                # from when the read returned (the frame's stamp), not when it began: a
                # read that blocked must not make the next frame due at once.
                read_at = self._monotonic()
                next_due = max(next_due, read_at - self.interval / 2) + self.interval
            yield CapturedFrame(image, self.clock_ms(), self.frames_read)
            self.frames_read += 1


def open_source(config: CameraConfig, *, clock_ms: Callable[[], int] = wall_clock_ms,
                on_state: StateListener | None = None) -> FrameSource:
    """The source named by ``config.source``; a missing file or folder is a ConfigError."""
    source = config.source
    common: dict[str, Any] = {
        "fps": config.fps, "clock_ms": clock_ms, "loop": config.loop,
        "reconnect_min_delay": config.reconnect_min_delay,
        "reconnect_max_delay": config.reconnect_max_delay, "on_state": on_state,
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
