"""What this box can carry, measured rather than configured: the birth's ``capacity`` for the balancer.

Cores and memory come from the OS; accelerators from onnxruntime's execution
providers (anything besides the CPU) and from device nodes a Hailo or a Jetson
board exposes. Each detector backend the agent's cameras use is timed on the
shipped benchmark image (``agents/models/benchmark.jpg``) in a background
thread after start, so start-up is not delayed; the next birth carries the
figure (the agent re-publishes its birth when the measurement lands).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

from schemas.birth import Capacity

__all__ = ["BENCHMARK_IMAGE", "HostCapacity", "accelerators", "measure_detector_fps"]

logger = logging.getLogger(__name__)

BENCHMARK_IMAGE = Path(__file__).resolve().parent / "models" / "benchmark.jpg"
_ACCELERATOR_NODES = {"/dev/hailo0": "hailo", "/dev/nvhost-ctrl-gpu": "jetson-gpu",
                      "/dev/apex_0": "coral-tpu"}


def accelerators() -> tuple[str, ...]:
    """Execution providers besides the CPU's, and accelerator device nodes present."""
    found: list[str] = []
    try:
        import onnxruntime

        found += [p for p in onnxruntime.get_available_providers() if p != "CPUExecutionProvider"]
    except ImportError:
        pass
    found += [name for node, name in _ACCELERATOR_NODES.items() if os.path.exists(node)]
    return tuple(found)


def measure_detector_fps(detect: Callable[[Any], object], frames: int = 8) -> float:
    """Frames per second of ``detect`` on the benchmark image (one warm-up call not counted)."""
    import cv2  # the camera extra; only called when there are cameras

    image = cv2.imread(str(BENCHMARK_IMAGE))
    if image is None:
        raise FileNotFoundError(f"the benchmark image {BENCHMARK_IMAGE} is missing")
    detect(image)
    start = time.perf_counter()
    for _ in range(frames):
        detect(image)
    elapsed = time.perf_counter() - start
    return round(frames / elapsed, 2) if elapsed > 0 else 0.0


class HostCapacity:
    """The capacity the birth reports; :meth:`measure_detectors` fills in detector speeds later."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fps: dict[str, float] = {}
        self._cores = psutil.cpu_count(logical=True) or 1
        self._memory_mb = psutil.virtual_memory().total // (1024 * 1024)
        self._accelerators = accelerators()

    def __call__(self) -> Capacity:
        with self._lock:
            return Capacity(self._cores, self._memory_mb, self._accelerators, dict(self._fps))

    def measure_detectors(self, detectors: Iterable[tuple[str, Mapping[str, Any]]],
                          create: Callable[[Mapping[str, Any]], Any],
                          then: Callable[[], object] | None = None) -> threading.Thread:
        """Time each ``(backend, config)`` in a background thread; call ``then`` when done."""
        todo = list(detectors)

        def run() -> None:
            for backend, config in todo:
                try:
                    detector = create(config)
                    try:
                        fps = measure_detector_fps(detector.detect)
                    finally:
                        detector.close()
                except Exception as exc:  # a backend that cannot run here has no capacity figure
                    logger.warning("could not time detector %s on this box: %s", backend, exc)
                    continue
                logger.info("detector %s runs at %.1f frames/s on this box", backend, fps)
                with self._lock:
                    self._fps[backend] = fps
            if then is not None and todo:
                then()

        thread = threading.Thread(target=run, name="capacity-measure", daemon=True)
        thread.start()
        return thread
