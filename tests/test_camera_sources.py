"""Frame sources: video files, image folders, pacing, and reconnecting a dropped live stream."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agents.camera.config import CameraConfig
from agents.camera.sources import FrameSource, open_source, unreachable_reason
from agents.detectors.base import Frame
from schemas.camera_health import SourceState
from schemas.errors import ConfigError, SourceUnavailable
from tests.brokers import free_port

cv2 = pytest.importorskip("cv2")


def solid(value: int, height: int = 48, width: int = 64) -> Frame:
    return np.full((height, width, 3), value, np.uint8)


def config_for(source: int | str, **extra: object) -> CameraConfig:
    return CameraConfig.from_mapping({"name": "cam", "source": source, "detector": {"type": "t"},
                                      "fps": 0, **extra})


def counting_clock(start: int = 1_000) -> Iterator[int]:
    return itertools.count(start, 10)


def write_video(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(solid(10 * i))
    writer.release()


def test_video_file_plays_to_the_end_with_clock_stamps(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 12)
    clock = counting_clock()
    source = open_source(config_for(str(path)), clock_ms=lambda: next(clock))
    frames = list(source.frames())
    assert len(frames) == 12
    assert [f.time_ms for f in frames[:3]] == [1_000, 1_010, 1_020]
    assert [f.index for f in frames] == list(range(12))
    assert frames[5].image.shape == (48, 64, 3) and frames[5].image.dtype == np.uint8
    assert abs(int(frames[5].image.mean()) - 50) <= 3  # decoded in order
    assert source.ended and not source.live and source.reconnects == 0


def test_video_file_loops_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 4)
    source = open_source(config_for(str(path), loop=True))
    frames = list(itertools.islice(source.frames(), 10))
    assert [round(f.image.mean() / 10) for f in frames] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_image_folder_in_name_order_skipping_what_is_not_an_image(tmp_path: Path) -> None:
    for name, value in [("b.png", 100), ("a.png", 50), ("c.jpg", 150)]:
        assert cv2.imwrite(str(tmp_path / name), solid(value))
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    source = open_source(config_for(str(tmp_path), loop=True))
    frames = list(itertools.islice(source.frames(), 7))
    assert [round(f.image.mean() / 50) for f in frames] == [1, 2, 3, 1, 2, 3, 1]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        open_source(config_for(str(tmp_path / "nope.mp4")))


def test_empty_folder_ends_with_an_error(tmp_path: Path) -> None:
    source = open_source(config_for(str(tmp_path)))
    assert list(source.frames()) == []
    assert source.ended and "no images" in source.last_error


def test_kinds_of_source() -> None:
    assert open_source(config_for(0)).live
    assert open_source(config_for("2")).description == "device 2"
    stream = open_source(config_for("rtsp://user:secret@cam.local/stream"))
    assert stream.live and "secret" not in stream.description


class FlakyStream:
    """A live reader scripted per open: how many frames each connection yields, or None to refuse."""

    def __init__(self, script: list[int | None]) -> None:
        self.script = list(script)
        self.left = 0
        self.opens = 0
        self.closed = 0
        self.value = 0

    def open(self) -> None:
        self.opens += 1
        step = self.script.pop(0) if self.script else 10**9
        if step is None:
            raise SourceUnavailable("connection refused")
        self.left = step

    def read(self) -> Frame | None:
        if self.left <= 0:
            return None
        self.left -= 1
        self.value += 1
        return solid(self.value % 256, 4, 4)

    def skip(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def close(self) -> None:
        self.closed += 1


def test_dropped_stream_reconnects_with_doubling_backoff_that_resets() -> None:
    reader = FlakyStream([2, None, None, 3, 0, 5])
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    source = FrameSource(reader, description="flaky", live=True, reconnect_min_delay=0.1,
                         reconnect_max_delay=0.3, wait=wait)
    stream = source.frames()
    frames = list(itertools.islice(stream, 9))
    stream.close()
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(1, 10))
    # drop, refused, refused -> 0.1, 0.2, 0.3 (capped); frames reset it; drop, drop -> 0.1, 0.2
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.1, 0.2])
    assert source.reconnects == 5 and not source.ended
    assert reader.closed == 3 + 1  # after each drop, and when the iteration ended


def test_stop_ends_a_live_source_during_backoff() -> None:
    reader = FlakyStream([None] * 100)
    source = FrameSource(reader, description="down", live=True, reconnect_min_delay=0.01,
                         reconnect_max_delay=0.01)
    calls = 0

    def wait(seconds: float) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            source.stop()
        return source.stopping

    source._wait = wait
    assert list(source.frames()) == []
    assert calls == 3 and reader.opens == 3


def test_fps_limit_on_a_live_source_discards_frames_between() -> None:
    now = [0.0]

    class Tick(FlakyStream):
        def read(self) -> Frame | None:
            now[0] += 0.1
            return super().read()

        def skip(self) -> bool:
            now[0] += 0.1
            return super().skip()

    reader = Tick([30])
    source = FrameSource(reader, description="cam", live=True, fps=2.0, monotonic=lambda: now[0])
    frames = list(itertools.islice(source.frames(), 5))
    # 10 frames per second in, 2 per second out: every fifth frame is decoded.
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 3, 4, 5]
    assert reader.left == 30 - 21


def test_fps_limit_on_a_file_waits_instead_of_skipping() -> None:
    now = [0.0]
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        now[0] += seconds
        return False

    source = FrameSource(FlakyStream([4]), description="file", live=False, fps=4.0,
                         monotonic=lambda: now[0], wait=wait)
    assert len(list(source.frames())) == 4
    assert len(waits) >= 3 and waits == pytest.approx([0.25] * len(waits))


def test_state_changes_come_in_order_with_the_frames(caplog: pytest.LogCaptureFixture) -> None:
    reader = FlakyStream([2, None, None, 3])
    log: list[tuple[str, object]] = []
    source = FrameSource(reader, description="door", live=True, reconnect_min_delay=0.1,
                         reconnect_max_delay=0.3, wait=lambda s: False,
                         on_state=lambda state, error: log.append((state.value, error)))
    caplog.set_level("INFO", logger="agents.camera.sources")
    stream = source.frames()
    for frame in itertools.islice(stream, 5):
        log.append(("frame", int(frame.image[0, 0, 0])))
    stream.close()
    assert log == [("streaming", ""), ("frame", 1), ("frame", 2),
                   ("reconnecting", "stream dropped"), ("reconnecting", "connection refused"),
                   ("streaming", ""), ("frame", 3), ("frame", 4), ("frame", 5)]
    assert source.state is SourceState.STREAMING and source.outages == 1
    assert source.last_error == "connection refused"
    # One warning when the outage began, one when its reason changed, one line when it ended.
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "stream dropped" in warnings[0]
    back = [r.getMessage() for r in caplog.records if "streaming again" in r.getMessage()]
    assert len(back) == 1 and "(3 attempts)" in back[0]


def test_first_frames_after_a_slow_open_keep_the_frame_interval() -> None:
    now = [0.0]

    class SlowOpen(FlakyStream):
        """Takes 3 s to open, then hands out a burst of buffered frames 10 ms apart."""

        def open(self) -> None:
            now[0] += 3.0
            super().open()

        def read(self) -> Frame | None:
            now[0] += 0.01
            return super().read()

        def skip(self) -> bool:
            now[0] += 0.01
            return super().skip()

    source = FrameSource(SlowOpen([100]), description="rtsp", live=True, fps=5.0,
                         monotonic=lambda: now[0], clock_ms=lambda: round(now[0] * 1000))
    frames = list(itertools.islice(source.frames(), 4))
    gaps = [b.time_ms - a.time_ms for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 200, gaps


def test_files_end_and_unreadable_sources_fail(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 3)
    states: list[SourceState] = []
    source = open_source(config_for(str(path)), on_state=lambda state, error: states.append(state))
    assert len(list(source.frames())) == 3
    assert states == [SourceState.STREAMING, SourceState.ENDED]

    errors: list[tuple[SourceState, str]] = []
    (tmp_path / "empty").mkdir()
    empty = open_source(config_for(str(tmp_path / "empty")),
                        on_state=lambda state, error: errors.append((state, error)))
    assert list(empty.frames()) == []
    assert errors == [(SourceState.FAILED, empty.last_error)] and "no images" in empty.last_error


def test_a_stream_that_cannot_open_says_why() -> None:
    port = free_port()
    assert "connection refused" in unreachable_reason(f"rtsp://127.0.0.1:{port}/cam")
    assert "cannot resolve" in unreachable_reason("rtsp://no-such-host.invalid/cam")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        answered = unreachable_reason(f"http://127.0.0.1:{server.getsockname()[1]}/")
    assert "accepts connections" in answered


def test_a_read_that_blocked_does_not_make_the_next_frame_due_at_once() -> None:
    now = [0.0]
    blocking = iter([0.15, 0.0, 0.19, 0.0, 0.0, 0.0])

    class Stalls(FlakyStream):
        """Reads that block for a while (a slow network, a busy CPU), then return at once."""

        def read(self) -> Frame | None:
            now[0] += next(blocking, 0.0)
            return super().read()

        def skip(self) -> bool:
            now[0] += 0.01
            return super().skip()

    source = FrameSource(Stalls([100]), description="http", live=True, fps=5.0,
                         monotonic=lambda: now[0], clock_ms=lambda: round(now[0] * 1000))
    frames = list(itertools.islice(source.frames(), 6))
    gaps = [b.time_ms - a.time_ms for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 100, gaps  # half the interval at most is caught up
