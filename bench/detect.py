"""Milliseconds per frame of the default detector, and what our own pre/post-processing adds.

    python bench/detect.py [--repeat 50] [--threads 2] [--yolo model.onnx]

Feeds a 640 x 480 frame made from a test photograph (so post-processing has a
person to keep) to the ``ssdlite`` backend and prints the best and median of
``--repeat`` runs for: the whole ``detect`` call; onnxruntime's ``run`` alone
on the same input (the baseline); and the difference, which is the resize,
normalisation, thresholding and NMS done in Python. Target: overhead under
2 ms a frame. With ``--yolo`` the same for a YOLO ONNX export.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agents.detectors.base import Frame, create_detector  # noqa: E402
from bench.results import record  # noqa: E402

PHOTO = REPO / "tests" / "data" / "photos" / "cameraman.jpg"


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(best, median) milliseconds of ``repeat`` calls after two warm-up calls."""
    call()
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return min(times), statistics.median(times)


OVERHEAD_TARGET_MS = 2.0


def report(name: str, detect: tuple[float, float], run: tuple[float, float], found: int) -> None:
    """One line per backend; the verdict compares the median overhead (detect minus run) to the target."""
    overhead = detect[1] - run[1]
    verdict = "PASS" if overhead < OVERHEAD_TARGET_MS else "MISS"
    ratio = detect[1] / run[1] if run[1] > 0 else float("inf")
    print(f"{name}: detect best {detect[0]:.2f} ms median {detect[1]:.2f} ms | onnxruntime run best "
          f"{run[0]:.2f} ms median {run[1]:.2f} ms (baseline; detect/run {ratio:.2f}x) | pre+post overhead "
          f"best {detect[0] - run[0]:.2f} ms median {overhead:.2f} ms (target < {OVERHEAD_TARGET_MS:g} ms: "
          f"{verdict}) | {found} detection(s)")
    record(f"{name} detect median", detect[1], "ms/frame", baseline="onnxruntime run alone",
           baseline_value=run[1], target=f"overhead < {OVERHEAD_TARGET_MS:g} ms",
           ok=overhead < OVERHEAD_TARGET_MS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--yolo", type=Path, help="also time this Ultralytics ONNX export")
    args = parser.parse_args()

    photo = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    if photo is None:
        sys.exit(f"cannot read {PHOTO}")
    frame: Frame = np.ascontiguousarray(cv2.resize(photo, (640, 480), interpolation=cv2.INTER_LINEAR),
                                        dtype=np.uint8)
    print(f"frame 640x480 from {PHOTO.name}, {args.threads} threads, {args.repeat} runs")

    ssd = create_detector({"type": "ssdlite", "threads": args.threads})
    tensor = ssd.preprocess(frame)  # type: ignore[attr-defined]
    session = ssd._session  # type: ignore[attr-defined]
    report("ssdlite", timed(lambda: ssd.detect(frame), args.repeat),
           timed(lambda: session.run(["boxes", "scores"], {"image": tensor}), args.repeat),
           len(ssd.detect(frame)))

    if args.yolo:
        from agents.detectors.yolo_decode import letterbox

        yolo = create_detector({"type": "yolo", "model": str(args.yolo), "threads": args.threads})
        width, height = yolo._width, yolo._height  # type: ignore[attr-defined]
        yolo_tensor, _ = letterbox(frame, width, height)
        yolo_session = yolo._session  # type: ignore[attr-defined]
        name = yolo_session.get_inputs()[0].name
        report(f"yolo {args.yolo.name}", timed(lambda: yolo.detect(frame), args.repeat),
               timed(lambda: yolo_session.run(None, {name: yolo_tensor}), args.repeat),
               len(yolo.detect(frame)))


if __name__ == "__main__":
    main()
