"""The camera half of ``bench/agent.py``: the whole pipeline against a bare detector loop.

A 640 x 480 MJPG video of test photographs (people and empty scenes in runs)
goes through the full :class:`~agents.camera.pipeline.CameraPipeline`
(capture thread, queue, detector, tracker, batching, events, a real session to
Mosquitto). Baseline in the same run: decode the same file and call the same
detector in a plain loop. Figures: frames/s of both and their ratio, inference
ms per frame, and the per-frame overhead beyond inference (target < 2 ms).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from agents.camera.config import CameraConfig
from agents.camera.pipeline import CameraPipeline
from agents.camera.publisher import DetectionsPublisher
from agents.detectors.base import create_detector
from bench.results import record
from broker.session import BusConfig, BusSession

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "tests" / "data" / "photos"
SCENES = ["astronaut.jpg", "coffee.jpg", "grace_hopper.jpg", "chelsea_cat.jpg", "cameraman.jpg"]
FRAMES_PER_SCENE = 40


def make_video(path: Path) -> int:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (640, 480))
    count = 0
    for name in SCENES:
        image = cv2.imread(str(PHOTOS / name))
        frame = np.zeros((480, 640, 3), np.uint8)
        h, w = image.shape[:2]
        scale = min(640 / w, 480 / h)
        resized = cv2.resize(image, (int(w * scale), int(h * scale)))
        frame[:resized.shape[0], :resized.shape[1]] = resized
        for _ in range(FRAMES_PER_SCENE):
            writer.write(frame)
            count += 1
    writer.release()
    return count


def bare_loop(video: Path) -> tuple[int, float]:
    detector = create_detector({"type": "ssdlite"})
    capture = cv2.VideoCapture(str(video))
    frames = 0
    start = time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        detector.detect(frame)
        frames += 1
    elapsed = time.perf_counter() - start
    capture.release()
    detector.close()
    return frames, elapsed


def pipeline_run(video: Path, workdir: Path, port: int) -> tuple[int, float, float, float]:
    session = BusSession(BusConfig(port=port, device="bench-cam", clean_start=True,
                                   outbox_path=workdir / "bench-cam.sqlite"))
    session.start()
    session.wait_connected(10)
    config = CameraConfig.from_mapping({"name": "bench", "source": str(video), "fps": 0,
                                        "queue_size": 1000, "detector": {"type": "ssdlite"}})
    detector = create_detector(config.detector)
    pipeline = CameraPipeline(config, detector, DetectionsPublisher.for_camera(session, config))
    start = time.perf_counter()
    pipeline.start()
    pipeline.wait_finished(600)
    elapsed = time.perf_counter() - start
    stats = pipeline.stats()
    pipeline.stop()
    session.stop(flush_timeout=10)
    detector.close()
    return stats.frames_detected, elapsed, stats.inference_ms_avg, stats.overhead_ms_avg


def run_camera_bench(workdir: Path, port: int) -> None:
    video = workdir / "scenes.avi"
    total = make_video(video)
    base_frames, base_s = bare_loop(video)
    frames, seconds, inference_ms, overhead_ms = pipeline_run(video, workdir, port)
    base_fps, fps = base_frames / base_s, frames / seconds
    print(f"camera pipeline (ssdlite, 640x480, {total} frames, full path to Mosquitto): "
          f"{fps:6.1f} frames/s")
    print(f"baseline bare decode+detect loop, same file:                        {base_fps:6.1f} frames/s")
    print(f"ratio pipeline / baseline: {fps / base_fps:.2f}")
    print(f"inference {inference_ms:.2f} ms/frame; overhead beyond inference {overhead_ms:.3f} ms/frame")
    verdict = "PASS" if overhead_ms < 2.0 else "MISS"
    print(f"{verdict}  per-frame overhead {overhead_ms:.3f} ms (target < 2 ms)")
    record("camera pipeline frames/s", fps, "frames/s", baseline="bare decode+detect loop",
           baseline_value=base_fps, target="overhead < 2 ms/frame", ok=overhead_ms < 2.0)
    record("camera per-frame overhead", overhead_ms, "ms/frame", baseline="inference alone",
           baseline_value=inference_ms, target="< 2 ms", ok=overhead_ms < 2.0)
