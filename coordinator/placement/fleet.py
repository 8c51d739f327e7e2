"""What the placer sees of the fleet: births (capacity), wills, metrics (load), and who runs which camera.

Fed from the bus by :class:`~coordinator.placement.service.PlacementService`
(each handler takes the device and the raw payload, so it is driven directly
in tests), read as one consistent :class:`Snapshot`. Device payloads are
lenient: an unreadable one is logged and ignored, never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

from protocols.placement import AgentCapacity, AgentLoad, AgentView
from schemas.birth import Capacity
from schemas.errors import CodecError
from schemas.messages import Birth, decode_record
from schemas.metrics import MetricsBatch

__all__ = ["FleetState", "Snapshot"]

logger = logging.getLogger(__name__)

#: What the planner assumes of an agent whose birth carries no capacity (an older agent).
_FALLBACK = Capacity(cores=1, memory_mb=1024)


@dataclass
class _Agent:
    capacity: Capacity | None = None
    runs_cameras: bool = False
    online: bool = False
    status_since_ms: int = 0
    cpu_share: float = 0.0
    memory_share: float = 0.0
    measured_ms: int = 0
    cameras: frozenset[str] | None = None  # its retained state/cameras; None: not heard


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The agents that run cameras (as the planner sees them) and what each reports running."""

    agents: tuple[AgentView, ...]
    reported: dict[str, frozenset[str]] = field(default_factory=dict)  # agent -> cameras it says it runs
    online: frozenset[str] = frozenset()
    #: Agents that report cameras but whose birth or will is not known yet, and online camera agents that
    #: have not reported their cameras yet: planning would guess.
    unknown: tuple[str, ...] = ()
    #: Online camera agents with no load report yet.
    unmeasured: tuple[str, ...] = ()


class FleetState:
    """Thread-safe; ``cpu_metric`` / ``memory_metric`` are percent-of-box metrics read as load."""

    def __init__(self, cpu_metric: str = "cpu_percent", memory_metric: str = "mem_used_percent") -> None:
        self.cpu_metric = cpu_metric
        self.memory_metric = memory_metric
        self._lock = threading.Lock()
        self._agents: dict[str, _Agent] = {}

    def _agent(self, device: str) -> _Agent:
        return self._agents.setdefault(device, _Agent())

    def on_birth(self, device: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained birth
        try:
            birth = decode_record(payload)
        except CodecError as exc:
            logger.warning("placement: ignoring %s's unreadable birth: %s", device, exc)
            return
        if not isinstance(birth, Birth) or birth.device != device:
            return
        with self._lock:
            a = self._agent(device)
            a.capacity = birth.capacity
            a.runs_cameras = "cameras" in birth.capabilities

    def on_status(self, device: str, payload: bytes, now_ms: int) -> None:
        online = bytes(payload[:16]).strip() == b"online"
        with self._lock:
            a = self._agent(device)
            if a.online != online or a.status_since_ms == 0:
                a.online = online
                a.status_since_ms = now_ms

    def on_metrics(self, device: str, payload: bytes, now_ms: int) -> None:
        try:
            batch = decode_record(payload)
        except CodecError as exc:
            logger.debug("placement: ignoring %s's unreadable metrics: %s", device, exc)
            return
        if not isinstance(batch, MetricsBatch):
            return
        cpu = mem = None
        for s in batch.samples:  # the latest of each, in batch order
            if s.name == self.cpu_metric:
                cpu = s.value
            elif s.name == self.memory_metric:
                mem = s.value
        if cpu is None and mem is None:
            return
        with self._lock:
            a = self._agent(device)
            if cpu is not None:
                a.cpu_share = max(0.0, float(cpu)) / 100.0
            if mem is not None:
                a.memory_share = max(0.0, float(mem)) / 100.0
            a.measured_ms = now_ms

    def on_cameras(self, device: str, payload: bytes) -> None:
        if not payload:
            with self._lock:
                self._agent(device).cameras = frozenset()
            return
        try:
            names = json.loads(payload)["cameras"]
            cameras = frozenset(str(n) for n in names)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("placement: ignoring %s's unreadable state/cameras: %s", device, exc)
            return
        with self._lock:
            self._agent(device).cameras = cameras

    def snapshot(self) -> Snapshot:
        views: list[AgentView] = []
        reported: dict[str, frozenset[str]] = {}
        online: set[str] = set()
        unknown: list[str] = []
        unmeasured: list[str] = []
        with self._lock:
            for device, a in sorted(self._agents.items()):
                if a.cameras is not None:
                    reported[device] = a.cameras
                    if a.cameras and (a.status_since_ms == 0 or not a.runs_cameras):
                        unknown.append(device)
                if a.online:
                    online.add(device)
                if not a.runs_cameras:
                    continue
                if a.online and a.cameras is None:
                    unknown.append(device)  # it may own cameras we have not heard of: placing would guess
                if a.online and a.measured_ms == 0:
                    unmeasured.append(device)
                cap = a.capacity or _FALLBACK
                views.append(AgentView(
                    device,
                    AgentCapacity(cores=cap.cores, memory_mb=max(cap.memory_mb, 1),
                                  accelerators=len(cap.accelerators), detector_fps=dict(cap.detector_fps)),
                    AgentLoad(measured_ms=a.measured_ms, cpu_share=a.cpu_share, memory_share=a.memory_share),
                    online=a.online, status_since_ms=a.status_since_ms))
        return Snapshot(tuple(views), reported, frozenset(online), tuple(unknown), tuple(unmeasured))
