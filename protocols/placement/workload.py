"""A unit of work the placement core puts on one agent: a camera stream or an inference job."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocols.placement.validation import agent_ids, non_negative, whole, workload_id

__all__ = ["Workload", "WorkloadKind"]


class WorkloadKind(StrEnum):
    CAMERA = "camera"  # an agent runs it through the assign/unassign commands
    INFERENCE = "inference"  # detection on frames another agent sends


@dataclass(frozen=True, slots=True)
class Workload:
    """What a workload needs, as measured where it runs (or declared, before it ever ran).

    ``cpu_cores`` is the CPU it keeps busy, in cores (0.5: half a core);
    ``fps`` the frames/s it feeds to detector ``backend`` (None: no detector),
    which an agent can run only if it measured that backend. ``reachable_from``
    names the agents that can reach it (a camera on one site's network); None:
    any agent. Higher ``priority`` is placed first and, when load must shed,
    moved last.

    >>> Workload("door", cpu_cores=0.4, memory_mb=180, fps=8, backend="ssdlite").kind
    <WorkloadKind.CAMERA: 'camera'>
    """

    id: str
    cpu_cores: float = 0.0
    memory_mb: int = 0
    fps: float = 0.0
    kind: WorkloadKind = WorkloadKind.CAMERA
    backend: str | None = None
    needs_accelerator: bool = False
    reachable_from: frozenset[str] | None = None
    priority: int = 0
    tx_per_s: float = 0.0

    def __post_init__(self) -> None:
        workload_id("workload id", self.id)
        w = f"workload {self.id}"
        object.__setattr__(self, "cpu_cores", non_negative(f"{w}: cpu_cores", self.cpu_cores))
        whole(f"{w}: memory_mb", self.memory_mb)
        object.__setattr__(self, "fps", non_negative(f"{w}: fps", self.fps))
        object.__setattr__(self, "tx_per_s", non_negative(f"{w}: tx_per_s", self.tx_per_s))
        object.__setattr__(self, "kind", WorkloadKind(self.kind))
        if self.backend is not None:
            workload_id(f"{w}: backend", self.backend)
        if not isinstance(self.needs_accelerator, bool):
            raise ValueError(f"{w}: needs_accelerator must be true or false")
        if self.reachable_from is not None:
            reach = agent_ids(f"{w}: reachable_from", self.reachable_from)
            if not reach:
                raise ValueError(f"{w}: reachable_from is empty (no agent could run it); use None for any")
            object.__setattr__(self, "reachable_from", reach)
        whole(f"{w}: priority", self.priority, minimum=-1000)

    def describe(self) -> str:
        """``camera door`` / ``inference job plates``, for plain-word reasons."""
        return f"camera {self.id}" if self.kind is WorkloadKind.CAMERA else f"inference job {self.id}"
