"""Real camera streams for tests: an MJPEG-over-HTTP server and a GStreamer RTSP server.

Each runs as its own process (``tests/mjpeg_server.py``, ``tests/rtsp_server.py``)
on a fixed port, so a test can kill it as a crashed camera dies (SIGKILL) and
start it again where the agent will look for it. :func:`require_rtsp` finds a
Python that has GStreamer's RTSP server (Debian: ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``); without one the RTSP tests skip, or fail when
``EDGEBUS_REQUIRE_RTSP=1`` (CI installs the packages).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

from tests.brokers import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "tests" / "data" / "photos"
#: Where Debian's python3-gi lives; the project's virtualenv cannot import it.
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
_GI_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in"
             " ('jpegdec', 'jpegenc', 'rtpjpegpay', 'imagefreeze')) else 3)")


def rtsp_python() -> str | None:
    """A Python interpreter that can run tests/rtsp_server.py, or None."""
    for python in (*SYSTEM_PYTHONS, sys.executable):
        if not Path(python).is_file():
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if subprocess.run([python, "-c", _GI_CHECK], capture_output=True, timeout=30).returncode == 0:
                return python
    return None


def require_rtsp() -> str:
    """The Python for the RTSP server; skip without one (fail if ``EDGEBUS_REQUIRE_RTSP=1``)."""
    python = rtsp_python()
    if python is not None:
        return python
    message = ("no Python with GStreamer's RTSP server (apt-get install python3-gi "
               "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
    if os.environ.get("EDGEBUS_REQUIRE_RTSP") == "1":
        pytest.fail(f"EDGEBUS_REQUIRE_RTSP=1 but {message}", pytrace=False)
    pytest.skip(message)


class StreamServer:
    """One camera stream server process on a fixed port: start, kill, start again."""

    def __init__(self, command: Sequence[str], port: int, url: str, log: Path) -> None:
        self.command = list(command)
        self.port = port
        self.url = url
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> StreamServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        if not wait_for_port("127.0.0.1", self.port, timeout=20, alive=self.proc):
            self.kill()
            raise AssertionError(f"stream server did not listen on {self.port}: "
                                 f"{self.log.read_text(errors='replace')[-2000:]}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a camera that loses power: no goodbye on the connection."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait(10)

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.kill()


def mjpeg_server(tmp_path: Path, photo: str = "astronaut.jpg", fps: int = 10) -> StreamServer:
    """An MJPEG-over-HTTP stream of ``photo`` (not started)."""
    port = free_port()
    return StreamServer([sys.executable, str(REPO / "tests" / "mjpeg_server.py"), str(port),
                         str(PHOTOS / photo), str(fps)], port, f"http://127.0.0.1:{port}/stream",
                        tmp_path / "mjpeg.log")


def rtsp_server(tmp_path: Path, python: str, photo: str = "astronaut.jpg", fps: int = 10) -> StreamServer:
    """An RTSP (Motion-JPEG over RTP) stream of ``photo`` (not started)."""
    port = free_port()
    return StreamServer([python, str(REPO / "tests" / "rtsp_server.py"), str(port),
                         str(PHOTOS / photo), str(fps)], port, f"rtsp://127.0.0.1:{port}/cam",
                        tmp_path / "rtsp.log")
