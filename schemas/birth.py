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

__all__ = ["Birth"]


def _capability(where: str, value: object) -> str:
    return check_text(where, value, max_chars=128)


@register_record
@dataclass(frozen=True, slots=True, kw_only=True)
class Birth(Record):
    """A device's identity card.

    ``capabilities`` are free-form feature names (``"camera"``, ``"ota"``);
    ``versions`` maps component to version (``{"python": "3.11.7", "os": ...}``);
    ``groups`` are the operator's names for the cohorts the device belongs to
    (``"lobby"``), which OTA rollouts target. ``groups`` goes on the wire only
    when non-empty, so a device without groups sends exactly what older
    coordinators know, and an older decoder keeps a newer device's groups in
    ``extra``.
    """

    TYPE: ClassVar[str] = "birth"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"device", "epoch", "agent_version", "capabilities", "versions", "time_ms", "groups"})

    device: str
    epoch: int
    agent_version: str
    time_ms: int
    capabilities: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=empty_map, hash=False)
    groups: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_device("birth device", self.device)
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
        return body

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Birth:
        return cls(device=fields.get_str("device"), epoch=fields.get_int("epoch"),
                   agent_version=fields.get_str("agent_version"),
                   time_ms=fields.get_int("time_ms"),
                   capabilities=tuple(fields.get_str_list("capabilities")),
                   versions=fields.get_map("versions"),
                   groups=tuple(fields.get_str_list("groups")) if fields.has("groups") else (),
                   extra=extra)

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "type": self.TYPE, "version": self.VERSION, "device": self.device,
            "epoch": self.epoch, "agent_version": self.agent_version, "time_ms": self.time_ms,
            "capabilities": list(self.capabilities), "versions": dict(self.versions),
        }
        if self.groups:
            view["groups"] = list(self.groups)
        if self.extra:
            view["extra"] = jsonable(self.extra)
        return view
