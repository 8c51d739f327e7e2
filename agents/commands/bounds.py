"""Bounds on the numbers a command may set, so a command cannot make the device harm itself.

The strict readers (:class:`~agents.config.MetricsConfig`,
:class:`~agents.camera.config.CameraConfig`, the detector backends) refuse what
is malformed (NaN, inf, a string, a negative queue); this module refuses what
is well-formed but harmful when it comes over the bus: ``config`` with
``interval = 0.001`` (a core spent sampling), an ``assign`` at 1,000 fps or
with a 1,000-frame queue. The operator's file may still set such values: the
bounds are for commands only. Each refusal is answered with reason
``out_of_bounds`` naming the key and its bound, and counted.

The ``min_*`` periods and ``max_fps`` come from ``[commands]``
(:class:`~agents.config.CommandsConfig`); the rest are fixed here (:data:`CAMERA_BOUNDS`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Final

from agents.config import CommandsConfig
from schemas.command import Command

__all__ = ["CAMERA_BOUNDS", "DETECTOR_BOUNDS", "MOTION_BOUNDS", "bounds_problem"]

#: ``[[cameras]]`` keys an ``assign`` may set: (lowest, highest). ``fps`` is bounded by
#: ``[commands] max_fps`` (and 0, "unpaced", is refused over the bus).
CAMERA_BOUNDS: Final[Mapping[str, tuple[float, float]]] = {
    "queue_size": (1, 32),                  # decoded frames held: 32 x 6 MB at 1080p
    "batch_interval": (0.1, 3600.0),
    "batch_max_frames": (1, 1000),
    "track_timeout": (1, 1000),
    "track_min_hits": (1, 100),
    "snapshot_max_bytes": (1024, 256 * 1024),
    "reconnect_min_delay": (0.1, 300.0),    # a reconnect storm costs a core too
    "reconnect_max_delay": (0.1, 300.0),
    "priority": (0, 10),
}
MOTION_BOUNDS: Final[Mapping[str, tuple[float, float]]] = {
    "width": (8, 1920),
    "keepalive": (0.0, 3600.0),
}
#: Detector options an ``assign`` may set; ``threads`` at most the machine's cores.
DETECTOR_BOUNDS: Final[Mapping[str, tuple[float, float]]] = {
    "threads": (1, os.cpu_count() or 1),
    "input_size": (32, 1280),               # 8192 would be a 800 MB input tensor
    "max_detections": (1, 1000),
}
_PERIODS: Final = (("interval", "min_interval"), ("batch_interval", "min_batch_interval"),
                   ("heartbeat", "min_heartbeat"))


def _number(value: object) -> float | None:
    """A finite number to compare (bools, text, NaN: None; the strict reader refuses those)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _outside(where: str, table: Mapping[str, Any], bounds: Mapping[str, tuple[float, float]]) -> str | None:
    for key, (low, high) in bounds.items():
        value = _number(table.get(key))
        if value is not None and not low <= value <= high:
            return f"{where}{key} = {table[key]!r} is outside what a command may set ({low:g} to {high:g})"
    return None


def bounds_problem(command: Command, limits: CommandsConfig) -> str | None:
    """Which number in ``command`` is outside its command bound (None: all inside, or not a number)."""
    args = command.args
    if command.name == "config":
        metrics = args.get("metrics")
        if not isinstance(metrics, Mapping):
            return None
        for key, limit in _PERIODS:
            value = _number(metrics.get(key))
            lowest = float(getattr(limits, limit))
            if value is not None and 0 < value < lowest:  # 0 and below: the strict reader's refusal
                return (f"metrics.{key} = {metrics[key]!r} is below the {lowest:g} s a command may set "
                        f"([commands] {limit})")
        return None
    if command.name != "assign":
        return None
    fps = _number(args.get("fps"))
    if fps is not None and not 0 < fps <= limits.max_fps:
        return (f"fps = {args['fps']!r} is outside what a command may set (above 0, at most "
                f"{limits.max_fps:g}: [commands] max_fps)")
    problem = _outside("", args, CAMERA_BOUNDS)
    motion, detector = args.get("motion"), args.get("detector")
    if problem is None and isinstance(motion, Mapping):
        problem = _outside("motion.", motion, MOTION_BOUNDS)
    if problem is None and isinstance(detector, Mapping):
        problem = _outside("detector.", detector, DETECTOR_BOUNDS)
    return problem
