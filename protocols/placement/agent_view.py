"""What the placement core knows of one agent: what the box can carry, what it carries now, whether it is up.

Capacity comes from the agent's birth (cores, memory, accelerators, and the
frames/s each detector backend measured on this box at start-up); load from
its metrics, stamped with the time it was measured so the planner can tell
which moves the measurement already shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocols.placement.validation import (
    agent_id,
    fraction,
    frozen,
    non_negative,
    positive,
    time_ms,
    whole,
    workload_id,
)
from schemas.record_base import empty_map

__all__ = ["AgentCapacity", "AgentLoad", "AgentView"]


@dataclass(frozen=True, slots=True)
class AgentCapacity:
    """What one box can carry.

    ``detector_fps`` maps a detector backend (``"ssdlite"``, ``"yolov8n"``) to
    the frames/s it measured here; a workload that needs a backend can run
    only where it was measured. ``reserved_memory_mb`` is kept for the system
    and the agent itself: placement never hands it out.

    >>> AgentCapacity(cores=4, memory_mb=4096, detector_fps={"ssdlite": 60}).detector_fps["ssdlite"]
    60.0
    """

    cores: float
    memory_mb: int
    accelerators: int = 0
    detector_fps: Mapping[str, float] = field(default_factory=empty_map)
    max_tx_per_s: float = 100.0
    reserved_memory_mb: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cores", positive("capacity.cores", self.cores))
        whole("capacity.memory_mb", self.memory_mb, 1)
        whole("capacity.accelerators", self.accelerators)
        object.__setattr__(self, "max_tx_per_s", positive("capacity.max_tx_per_s", self.max_tx_per_s))
        whole("capacity.reserved_memory_mb", self.reserved_memory_mb)
        if self.reserved_memory_mb >= self.memory_mb:
            raise ValueError(f"capacity.reserved_memory_mb ({self.reserved_memory_mb}) must be below "
                             f"capacity.memory_mb ({self.memory_mb})")
        if not isinstance(self.detector_fps, Mapping):
            raise ValueError("capacity.detector_fps must map a backend name to frames/s")
        object.__setattr__(self, "detector_fps", frozen({
            workload_id("capacity.detector_fps backend", k): positive(f"capacity.detector_fps[{k!r}]", v)
            for k, v in self.detector_fps.items()}))

    @property
    def placeable_memory_mb(self) -> int:
        return self.memory_mb - self.reserved_memory_mb


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """What the agent's metrics said at ``measured_ms`` (the coordinator's clock).

    Shares are of the whole box (``cpu_share`` 0.5 on four cores: two cores
    busy) and may exceed 1 where a measurement over-commits. ``lock_contention``
    is the share of lock requests that had to wait. ``frames_in_per_s`` and
    ``frames_done_per_s`` are the frames that arrived and that were processed:
    their difference is work the box does not keep up with.
    ``forecast_cpu_share`` is the CPU share expected a short horizon ahead,
    when a forecaster gives one.
    """

    measured_ms: int = 0
    cpu_share: float = 0.0
    memory_share: float = 0.0
    tx_per_s: float = 0.0
    lock_contention: float = 0.0
    inference_ms: float = 0.0
    frames_in_per_s: float = 0.0
    frames_done_per_s: float = 0.0
    forecast_cpu_share: float | None = None

    def __post_init__(self) -> None:
        time_ms("load.measured_ms", self.measured_ms)
        for name in ("cpu_share", "memory_share", "tx_per_s", "inference_ms", "frames_in_per_s",
                     "frames_done_per_s"):
            object.__setattr__(self, name, non_negative(f"load.{name}", getattr(self, name)))
        object.__setattr__(self, "lock_contention", fraction("load.lock_contention", self.lock_contention))
        if self.forecast_cpu_share is not None:
            object.__setattr__(self, "forecast_cpu_share",
                               non_negative("load.forecast_cpu_share", self.forecast_cpu_share))


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as the coordinator sees it.

    ``status_since_ms`` is when it last came online or went offline (its will),
    so the planner can give a box that drops off a grace period before taking
    its work away. Cordon and drain are the operator's, in
    :class:`~protocols.placement.controls.OperatorControls`, not here: this is
    what was measured.
    """

    id: str
    capacity: AgentCapacity
    load: AgentLoad = field(default_factory=AgentLoad)
    online: bool = True
    status_since_ms: int = 0

    def __post_init__(self) -> None:
        agent_id("agent id", self.id)
        if not isinstance(self.capacity, AgentCapacity) or not isinstance(self.load, AgentLoad):
            raise ValueError(f"agent {self.id}: capacity and load must be AgentCapacity and AgentLoad")
        if not isinstance(self.online, bool):
            raise ValueError(f"agent {self.id}: online must be true or false")
        time_ms(f"agent {self.id}: status_since_ms", self.status_since_ms)
