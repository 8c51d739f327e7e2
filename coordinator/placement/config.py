"""``[placement]`` in coordinator.toml: which group places, how often, and the cameras it may move.

Operator configuration: strict, every error names the key. The binding's own
keys are listed in :data:`BINDING_KEYS`; every other plain key is the
planner's (:class:`~protocols.placement.PlannerConfig`), and
``[placement.cameras.NAME]`` is a camera the balancer manages: the table an
agent is given when it takes the camera (``source``, ``fps``, ``detector``...,
as in agent.toml's ``[[cameras]]``), plus the placement hints ``cpu_cores``,
``memory_mb``, ``priority``, ``agents`` (the agents that can reach it) and
``backend`` (run only where that detector backend was measured), which stay
with the coordinator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.config_values import check_keys
from protocols.placement import PlannerConfig, Workload
from schemas.errors import ConfigError
from schemas.topics import validate_device_id, validate_name

__all__ = ["BINDING_KEYS", "CameraSpec", "PlacementConfig"]

BINDING_KEYS = frozenset({"group", "lock", "interval_s", "move_timeout_s", "cpu_metric", "memory_metric",
                          "cameras", "placer_ttl_ms"})
HINT_KEYS = frozenset({"cpu_cores", "memory_mb", "priority", "agents", "backend"})


def _number(where: str, value: object, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{where} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera the balancer may place: the table agents run it from, and what it needs."""

    name: str
    table: Mapping[str, Any]
    cpu_cores: float = 0.25
    memory_mb: int = 0
    priority: int = 0
    agents: frozenset[str] | None = None
    backend: str | None = None

    @classmethod
    def from_mapping(cls, name: str, data: object) -> CameraSpec:
        where = f"placement.cameras.{name}"
        try:
            validate_name(name, "camera name")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a table ([{where}])")
        if "source" not in data:
            raise ConfigError(f"{where}: source is required (what the taking agent reads frames from)")
        if "name" in data and data["name"] != name:
            raise ConfigError(f"{where}: name {data['name']!r} differs from the table's name")
        agents = data.get("agents")
        if agents is not None:
            if not isinstance(agents, list) or not agents:
                raise ConfigError(f"{where}.agents must be a non-empty list of agent ids")
            try:
                agents = frozenset(validate_device_id(a) for a in agents)
            except ValueError as exc:
                raise ConfigError(f"{where}.agents: {exc}") from None
        memory = data.get("memory_mb", 0)
        priority = data.get("priority", 0)
        for key, value in (("memory_mb", memory), ("priority", priority)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}.{key} must be a whole number, not {value!r}")
        backend = data.get("backend")
        if backend is not None and not isinstance(backend, str):
            raise ConfigError(f"{where}.backend must be a detector backend name, not {backend!r}")
        table = {k: v for k, v in data.items() if k not in HINT_KEYS}
        return cls(name, {**table, "name": name},
                   _number(f"{where}.cpu_cores", data.get("cpu_cores", 0.25), 0.0, 1024.0),
                   memory, priority, agents, backend)

    def workload(self) -> Workload:
        fps = self.table.get("fps", 0.0)
        return Workload(self.name, cpu_cores=self.cpu_cores, memory_mb=self.memory_mb,
                        fps=float(fps) if isinstance(fps, int | float) and not isinstance(fps, bool) else 0.0,
                        backend=self.backend, reachable_from=self.agents, priority=self.priority)


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """The parsed ``[placement]`` table; see the module docstring.

    ``group`` is the Raft group that serves the lock service and two-phase
    commit (the agents' ``[transactions] group``); ``lock`` the lock whose
    holder is the one placer; ``placer_ttl_ms`` its session's lease (a placer
    cut off longer loses the lock). ``cpu_metric`` / ``memory_metric`` are the
    agents' metrics (percent of the box) the planner reads as load.
    """

    group: str
    lock: str = "placement/placer"
    interval_s: float = 2.0
    move_timeout_s: float = 15.0
    cpu_metric: str = "cpu_percent"
    memory_metric: str = "mem_used_percent"
    placer_ttl_ms: int = 5000
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    cameras: tuple[CameraSpec, ...] = ()

    @classmethod
    def from_mapping(cls, data: object) -> PlacementConfig | None:
        """None when no ``[placement]`` table is given: the coordinator does not place."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ConfigError("placement must be a table ([placement])")
        group = data.get("group")
        if not isinstance(group, str) or not group:
            raise ConfigError("placement.group is required: the Raft group of the lock service and "
                              "two-phase commit (the agents' [transactions] group)")
        try:
            validate_name(group, "placement.group")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_keys("placement", data, BINDING_KEYS | set(PlannerConfig.__dataclass_fields__))
        planner = PlannerConfig.from_mapping({k: v for k, v in data.items() if k not in BINDING_KEYS})
        lock = data.get("lock", "placement/placer")
        if not isinstance(lock, str) or not lock:
            raise ConfigError(f"placement.lock must be a lock name, not {lock!r}")
        metrics = {}
        for key in ("cpu_metric", "memory_metric"):
            value = data.get(key, cls.__dataclass_fields__[key].default)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"placement.{key} must be a metric name, not {value!r}")
            metrics[key] = value
        ttl = data.get("placer_ttl_ms", 5000)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 500 <= ttl <= 600_000:
            raise ConfigError(f"placement.placer_ttl_ms must be a whole number from 500 to 600000, "
                              f"not {ttl!r}")
        cameras = data.get("cameras", {})
        if not isinstance(cameras, Mapping):
            raise ConfigError("placement.cameras must be a table of camera tables ([placement.cameras.NAME])")
        return cls(group=group, lock=lock,
                   interval_s=_number("placement.interval_s", data.get("interval_s", 2.0), 0.1, 3600),
                   move_timeout_s=_number("placement.move_timeout_s", data.get("move_timeout_s", 15.0),
                                          1.0, 3600),
                   placer_ttl_ms=ttl, planner=planner,
                   cameras=tuple(CameraSpec.from_mapping(n, t) for n, t in sorted(cameras.items())),
                   **metrics)

    def camera(self, name: str) -> CameraSpec | None:
        return next((c for c in self.cameras if c.name == name), None)
