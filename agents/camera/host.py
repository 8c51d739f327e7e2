"""The agent's cameras: one pipeline per ``[[cameras]]`` table, added and removed at run time.

The load balancer moves cameras between agents with ``assign`` / ``unassign``
commands, so pipelines are not fixed at start. Each camera has a shedding
``priority`` (default 2, the first work an overloaded device drops): while
shed, its frames are still captured (the queue keeps the newest) but not
analysed, and the skipped frames are counted in its metrics.

Each camera's metrics (``camera_{name}_...``) include ``streaming`` (1 while
frames come in, else 0), ``source_reconnects_total`` and
``source_outages_total``; its retained ``state/{name}_health`` says which
state the source is in and why (:mod:`schemas.camera_health`).

Importing this module needs the ``[camera]`` extra (OpenCV, onnxruntime).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.camera.config import CameraConfig
from agents.camera.pipeline import CameraPipeline
from agents.camera.publisher import DetectionsPublisher
from agents.camera.source_policy import SourcePolicy
from agents.camera.sources import wall_clock_ms
from agents.config import CommandsConfig
from agents.detectors.base import Detector, create_detector
from agents.extension import AgentExtension
from agents.shedding import SheddingPolicy
from broker.session import BusSession
from schemas.errors import CommandRefused, ConfigError
from schemas.messages import MetricSample

__all__ = ["CAMERAS_STATE", "CameraHost", "parse_camera"]

logger = logging.getLogger(__name__)

DEFAULT_PRIORITY = 2
CAMERAS_STATE = "cameras"  # state/cameras: the retained list of cameras this agent runs
DEFAULT_DETECTOR: Mapping[str, Any] = {"type": "ssdlite"}


@dataclass(frozen=True, slots=True)
class HostedCamera:
    config: CameraConfig
    priority: int


def parse_camera(table: Mapping[str, Any], section: str) -> HostedCamera:
    """A ``[[cameras]]`` table: the pipeline's keys plus the agent's ``priority``."""
    data = dict(table)
    priority = data.pop("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise ConfigError(f"{section}.priority must be an integer >= 0, not {priority!r}")
    detector = data.get("detector") or {}
    if not isinstance(detector, Mapping):
        raise ConfigError(f"{section}.detector must be a table ([cameras.detector])")
    data["detector"] = {**DEFAULT_DETECTOR, **detector}
    return HostedCamera(CameraConfig.from_mapping(data, section=section), priority)


class _Running:
    def __init__(self, camera: HostedCamera, pipeline: CameraPipeline, detector: Detector) -> None:
        self.camera = camera
        self.pipeline = pipeline
        self.detector = detector

    def stop(self) -> None:
        try:
            self.pipeline.stop()
        finally:
            self.detector.close()


class CameraHost(AgentExtension):
    """Owns the device's camera pipelines and their detectors."""

    name = "cameras"

    def __init__(self, session: BusSession, cameras: Sequence[HostedCamera], *,
                 clock_ms: Callable[[], int] = wall_clock_ms,
                 detector_factory: Callable[[Mapping[str, Any]], Detector] = create_detector,
                 on_cameras: Callable[[list[str]], None] | None = None,
                 start_suspended: bool = False, limits: CommandsConfig | None = None,
                 source_policy: SourcePolicy | None = None) -> None:
        names = [c.config.name for c in cameras]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ConfigError(f"camera names must be unique; repeated: {', '.join(sorted(duplicates))}")
        self.session = session
        #: What a camera from the bus (assign, a move) may be: sources, detector model, how many.
        self.limits = limits or CommandsConfig()
        self._policy_sources = source_policy or SourcePolicy(self.limits)
        self._initial = list(cameras)
        self._clock_ms = clock_ms
        self._detector_factory = detector_factory
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._policy: SheddingPolicy | None = None
        #: Hears the running cameras after every change (the agent's capabilities follow them).
        self._on_cameras = on_cameras
        #: Cameras this agent owns but does not run while the placement fence holds them
        #: (agents/camera/placement_fence.py); ``start_suspended``: all of them until it lets go.
        self._suspended: dict[str, HostedCamera] = {}
        self._start_suspended = start_suspended

    @property
    def cameras(self) -> list[str]:
        """The cameras this agent owns: running, or held by the placement fence (they count for votes)."""
        with self._lock:
            return sorted(set(self._running) | set(self._suspended))

    def pipeline(self, name: str) -> CameraPipeline | None:
        with self._lock:
            running = self._running.get(name)
        return running.pipeline if running else None

    def _launch(self, camera: HostedCamera) -> None:
        detector = self._detector_factory(camera.config.detector)
        publisher = DetectionsPublisher.for_camera(self.session, camera.config, clock_ms=self._clock_ms)
        pipeline = CameraPipeline(camera.config, detector, publisher, clock_ms=self._clock_ms)
        if self._policy is not None:
            pipeline.shed = not self._policy.allows(camera.priority)
        try:
            pipeline.start()
        except Exception:
            detector.close()
            raise
        with self._lock:
            self._running[camera.config.name] = _Running(camera, pipeline, detector)
        logger.info("camera %s started (source %s, detector %s)", camera.config.name,
                    camera.config.source, camera.config.detector.get("type"))

    def start(self) -> None:
        if self._start_suspended:  # the placement fence resumes (and publishes) them after reading the table
            self._suspended = {c.config.name: c for c in self._initial}
            return
        for camera in self._initial:
            try:
                self._launch(camera)
            except ConfigError:
                raise
            except Exception:
                logger.exception("camera %s could not start", camera.config.name)
        self.publish_cameras()

    def stop(self) -> None:
        with self._lock:
            running, self._running = list(self._running.values()), {}
        for r in running:
            r.stop()

    # -- commands -------------------------------------------------------

    def labels(self) -> list[tuple[str, tuple[str, ...]]]:
        """(camera, labels it reports) for each running camera, for Home Assistant."""
        with self._lock:
            running = list(self._running.values())
        return [(r.camera.config.name, r.camera.config.labels or r.detector.labels or ("person",))
                for r in running]

    def assign(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``assign``: start (or replace) camera ``args["camera"]``; the other args are its table."""
        table = {k: v for k, v in args.items() if k != "camera"}
        table["name"] = args.get("camera")
        camera = parse_camera(table, "assign")
        self._admit(table)
        with self._lock:
            previous = self._running.get(camera.config.name)
        replaced = self.unassign({"camera": camera.config.name}, missing_ok=True)["stopped"]
        try:
            self._launch(camera)
        except Exception as exc:
            if previous is None:
                raise
            # A bad replacement must not leave the camera dark: bring the old one back.
            self._launch(previous.camera)
            raise ConfigError(f"{exc}; camera {camera.config.name!r} keeps its previous "
                              "configuration") from exc
        self.publish_cameras()
        return {"camera": camera.config.name, "started": True, "replaced": replaced}

    def unassign(self, args: Mapping[str, Any], *, missing_ok: bool = False) -> dict[str, Any]:
        """``unassign``: stop camera ``args["camera"]``, flushing its last batch and tracks."""
        name = args.get("camera")
        if not isinstance(name, str):
            raise ConfigError("unassign needs args.camera, the camera to stop")
        with self._lock:
            running = self._running.pop(name, None)
            suspended = self._suspended.pop(name, None)
        if running is None and suspended is not None:
            self.publish_cameras()
            return {"camera": name, "stopped": True}
        if running is None:
            if missing_ok:
                return {"camera": name, "stopped": False}
            raise ConfigError(f"no camera {name!r} on this device (running: {', '.join(self.cameras)})")
        running.stop()
        self.publish_cameras()
        return {"camera": name, "stopped": True}

    # -- two-phase commit moves (agents/camera/move_resource.py) ----------

    def check_table(self, table: Mapping[str, Any]) -> None:
        """Raise ConfigError if ``table`` is not a camera this agent could run (or may: [commands])."""
        parse_camera(table, f"camera {table.get('name')!r}")
        self._admit(table)

    def _admit(self, table: Mapping[str, Any]) -> None:
        """Refuse a camera from the bus that ``[commands]`` does not allow: its source, or one too many."""
        self._policy_sources.check_table(table)
        name = table.get("name")
        with self._lock:
            owned = set(self._running) | set(self._suspended)
        if name not in owned and len(owned) >= self.limits.max_cameras:
            raise CommandRefused("too_many_cameras", f"this agent already runs {len(owned)} cameras, its "
                                                     f"[commands] max_cameras")

    def start_camera(self, table: Mapping[str, Any]) -> None:
        """Start the camera of ``table`` (a committed take); ConfigError if its pipeline cannot start."""
        camera = parse_camera(table, f"camera {table.get('name')!r}")
        self.unassign({"camera": camera.config.name}, missing_ok=True)
        try:
            self._launch(camera)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"camera {camera.config.name} did not start: {exc}") from exc
        self.publish_cameras()

    def stop_camera(self, camera: str) -> None:
        """Stop ``camera`` (a committed release); nothing if it is not running."""
        self.unassign({"camera": camera}, missing_ok=True)

    def suspend(self) -> list[str]:
        """Stop every pipeline but keep the cameras this agent's (``state/cameras`` unchanged): the fence."""
        with self._lock:
            running, self._running = list(self._running.values()), {}
            self._suspended.update({r.camera.config.name: r.camera for r in running})
            names = sorted(self._suspended)
        for r in running:
            r.stop()
        return names

    @property
    def suspended(self) -> list[str]:
        with self._lock:
            return sorted(self._suspended)

    def resume(self, drop: Iterable[str] = ()) -> None:
        """Start the suspended cameras again, except ``drop`` (no longer this agent's); publish the state."""
        dropped = set(drop)
        with self._lock:
            suspended, self._suspended = self._suspended, {}
        for name, camera in sorted(suspended.items()):
            if name in dropped:
                continue
            try:
                self._launch(camera)
            except Exception:
                logger.exception("camera %s could not start", name)
        self.publish_cameras()

    def publish_cameras(self) -> None:
        """The retained ``state/cameras``: which cameras this agent owns (runs, or the fence suspended)."""
        with self._lock:
            names = sorted(set(self._running) | set(self._suspended))
        if self._on_cameras is not None:
            self._on_cameras(names)
        body = json.dumps({"cameras": names})
        device = self.session.config.device
        if device:  # an agent's session always has one; a bare test session may not
            self.session.publish(self.session.topics.state(device, CAMERAS_STATE), body, qos=1, retain=True)

    def reload_model(self, model: Path) -> list[str]:
        """Restart every camera whose detector uses ``model`` (an OTA model update landed there).

        A detector is built from the new file for each such camera first, while the
        cameras keep running on the model they loaded before: if any cannot be built
        (wrong outputs, wrong input shape) nothing is restarted and a ConfigError
        says why, so the OTA part restores the previous file. Returns the cameras
        restarted.
        """
        target = model.resolve()
        with self._lock:
            users = [r.camera for r in self._running.values()
                     if isinstance(r.camera.config.detector.get("model"), str)
                     and Path(r.camera.config.detector["model"]).expanduser().resolve() == target]
        for camera in users:
            try:
                trial = self._detector_factory(camera.config.detector)
            except Exception as exc:
                raise ConfigError(f"camera {camera.config.name} cannot use model {model.name}: "
                                  f"{exc}") from exc
            trial.close()
        for camera in users:
            self.unassign({"camera": camera.config.name}, missing_ok=True)
            self._launch(camera)
        return [camera.config.name for camera in users]

    # -- agent hooks ----------------------------------------------------

    def on_shedding(self, policy: SheddingPolicy) -> None:
        self._policy = policy
        with self._lock:
            running = list(self._running.values())
        for r in running:
            shed = not policy.allows(r.camera.priority)
            if shed != r.pipeline.shed:
                logger.warning("camera %s: detection %s by load shedding", r.camera.config.name,
                               "paused" if shed else "resumed")
            r.pipeline.shed = shed

    def collect(self, time_ms: int) -> list[MetricSample]:
        with self._lock:
            running = list(self._running.values())
        out: list[MetricSample] = []
        for r in running:
            s = r.pipeline.stats()
            prefix = f"camera_{s.camera}_"
            values = {"frames_captured_total": s.frames_captured, "frames_dropped_total": s.frames_dropped,
                      "frames_shed_total": s.frames_shed, "frames_detected_total": s.frames_detected,
                      "motion_skipped_total": s.motion_skipped, "inference_ms": s.inference_ms_avg,
                      "overhead_ms": s.overhead_ms_avg, "active_tracks": s.active_tracks,
                      "detector_errors_total": s.detector_errors,
                      # 1 while frames come in; the health topic says why not.
                      "streaming": 1 if s.streaming else 0,
                      "source_reconnects_total": s.source_reconnects,
                      "source_outages_total": s.source_outages}
            out += [MetricSample(time_ms, prefix + k, round(float(v), 3)) for k, v in values.items()]
        return out
