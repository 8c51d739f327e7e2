"""The birth record: who a device is, what it can do, and its current sequence epoch.

Published retained on ``{root}/{device}/birth`` at every connect, so a
coordinator that starts later still learns every device. ``epoch`` changes only
when the device lost its sequence state (a wiped disk, a re-flash); a receiver
that sees a new epoch restarts its loss accounting for that device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from schemas.errors import CodecError
from schemas.record_base import (
    Record,
    WireFields,
    check_device,
    check_int,
    check_name,
    check_text,
    check_tuple,
    empty_map,
    freeze_extra,
    freeze_map,
    jsonable,
    register_record,
)

__all__ = ["Birth", "Capacity"]

_MAX_FPS = 1e6


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the box can carry, for the load balancer: measured by the agent, not configured.

    ``detector_fps`` maps a detector backend (``ssdlite``) to the frames per
    second it ran on this box at start-up on the shipped benchmark image;
    ``accelerators`` names what inference can use besides the CPU
    (``CUDAExecutionProvider``, ``hailo``). Keys a reader does not know are kept.
    """

    cores: int
    memory_mb: int
    accelerators: tuple[str, ...] = ()
    detector_fps: Mapping[str, float] = field(default_factory=empty_map, hash=False)
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cores", check_int("birth capacity.cores", self.cores, 1, 4096))
        object.__setattr__(self, "memory_mb",
                           check_int("birth capacity.memory_mb", self.memory_mb, 0, 2**40))
        object.__setattr__(self, "accelerators",
                           check_tuple("birth capacity.accelerators", self.accelerators, _capability))
        fps = freeze_map("birth capacity.detector_fps", self.detector_fps)
        for name, value in fps.items():
            check_name(f"birth capacity.detector_fps key {str(name)[:40]!r}", name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _MAX_FPS:
                raise CodecError(f"birth capacity.detector_fps[{name!r}] must be a number in "
                                 f"0..{_MAX_FPS:g}, not {value!r:.40}")
        object.__setattr__(self, "detector_fps", fps)
        object.__setattr__(self, "extra", freeze_map("birth capacity extra", self.extra))

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {**self.extra, "cores": self.cores, "memory_mb": self.memory_mb}
        if self.accelerators:
            body["accelerators"] = list(self.accelerators)
        if self.detector_fps:
            body["detector_fps"] = dict(self.detector_fps)
        return body

    @classmethod
    def from_wire(cls, value: object) -> Capacity:
        if not isinstance(value, dict):
            raise CodecError(f"birth capacity must be a map, not {type(value).__name__}")
        known = {"cores", "memory_mb", "accelerators", "detector_fps"}
        if "cores" not in value or "memory_mb" not in value:
            raise CodecError("birth capacity needs cores and memory_mb")
        accelerators = value.get("accelerators", [])
        fps = value.get("detector_fps", {})
        if not isinstance(accelerators, list) or not isinstance(fps, dict):
            raise CodecError("birth capacity: accelerators must be a list and detector_fps a map")
        return cls(value["cores"], value["memory_mb"], tuple(accelerators), fps,
                   {k: v for k, v in value.items() if k not in known})


def _capability(where: str, value: object) -> str:
    return check_text(where, value, max_chars=128)


@register_record
@dataclass(frozen=True, slots=True, kw_only=True)
class Birth(Record):
    """A device's identity card.

    ``capabilities`` are free-form feature names (``"camera"``, ``"ota"``);
    ``versions`` maps component to version (``{"python": "3.11.7", "os": ...}``);
    ``groups`` are the operator's names for the cohorts the device belongs to
    (``"lobby"``), which OTA rollouts target. ``capacity`` (optional) is what
    the box can carry, for the load balancer. ``groups`` goes on the wire only
    when non-empty, so a device without groups sends exactly what older
    coordinators know, and an older decoder keeps a newer device's groups in
    ``extra``.
    """

    TYPE: ClassVar[str] = "birth"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"device", "epoch", "agent_version", "capabilities", "versions", "time_ms", "groups", "capacity"})

    device: str
    epoch: int
    agent_version: str
    time_ms: int
    capabilities: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=empty_map, hash=False)
    groups: tuple[str, ...] = ()
    capacity: Capacity | None = None
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_device("birth device", self.device)
        if self.capacity is not None and not isinstance(self.capacity, Capacity):
            raise CodecError("birth capacity must be a Capacity")
        object.__setattr__(self, "epoch", check_int("birth epoch", self.epoch))
        check_text("birth agent_version", self.agent_version, max_chars=128)
        object.__setattr__(self, "time_ms", check_int("birth time_ms", self.time_ms))
        object.__setattr__(self, "capabilities",
                           check_tuple("birth capabilities", self.capabilities, _capability))
        versions = freeze_map("birth versions", self.versions)
        for key, value in versions.items():
            check_text(f"birth versions key {key[:40]!r}", key, max_chars=128)
            if not isinstance(value, str):
                raise CodecError(f"birth versions[{key!r}] must be a string, not "
                                 f"{type(value).__name__}")
            check_text(f"birth versions[{key!r}]", value, max_chars=256, empty_ok=True)
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "groups", check_tuple("birth groups", self.groups, check_name))
        object.__setattr__(self, "extra", freeze_extra(Birth, self.extra))

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"device": self.device, "epoch": self.epoch,
                                "agent_version": self.agent_version,
                                "capabilities": self.capabilities, "versions": self.versions,
                                "time_ms": self.time_ms}
        if self.groups:
            body["groups"] = self.groups
        if self.capacity is not None:
            body["capacity"] = self.capacity.to_wire()
        return body

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Birth:
        return cls(device=fields.get_str("device"), epoch=fields.get_int("epoch"),
                   agent_version=fields.get_str("agent_version"),
                   time_ms=fields.get_int("time_ms"),
                   capabilities=tuple(fields.get_str_list("capabilities")),
                   versions=fields.get_map("versions"),
                   groups=tuple(fields.get_str_list("groups")) if fields.has("groups") else (),
                   capacity=(Capacity.from_wire(fields.get_map("capacity")) if fields.has("capacity")
                             else None),
                   extra=extra)

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "type": self.TYPE, "version": self.VERSION, "device": self.device,
            "epoch": self.epoch, "agent_version": self.agent_version, "time_ms": self.time_ms,
            "capabilities": list(self.capabilities), "versions": dict(self.versions),
        }
        if self.groups:
            view["groups"] = list(self.groups)
        if self.capacity is not None:
            view["capacity"] = jsonable(self.capacity.to_wire())
        if self.extra:
            view["extra"] = jsonable(self.extra)
        return view
