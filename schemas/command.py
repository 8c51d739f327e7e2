"""The command record: something the coordinator asks one device to do.

Sent on ``{root}/{device}/cmd/{name}``. ``command_id`` lets the device
acknowledge (on ``reply_to`` when given) and lets it drop a redelivered
duplicate: commands travel at QoS 1, so they can arrive twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from schemas.errors import CodecError, TopicError
from schemas.record_base import (
    Record,
    WireFields,
    check_device,
    check_int,
    check_text,
    empty_map,
    freeze_extra,
    freeze_map,
    jsonable,
    register_record,
)
from schemas.topics import validate_command_name, validate_publish_topic

__all__ = ["Command"]


@register_record
@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Record):
    """A request to device ``device``: ``name`` (``"assign"``, ``"ota/chunk"``) with ``args``.

    ``args`` may hold any msgpack values (kept read-only); ``reply_to`` is a
    topic for the answer, or None.
    """

    TYPE: ClassVar[str] = "command"
    VERSION: ClassVar[int] = 1
    WIRE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"device", "name", "id", "args", "time_ms", "reply_to"})
    # A device that gets a newer command than it understands must be updated.
    RECEIVER: ClassVar[str] = "agent"

    device: str
    name: str
    command_id: str
    time_ms: int
    args: Mapping[str, Any] = field(default_factory=empty_map, hash=False)
    reply_to: str | None = None
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_device("command device", self.device)
        try:
            validate_command_name(self.name)
        except TopicError as exc:
            raise CodecError(f"command name: {exc}") from None
        check_text("command command_id", self.command_id, max_chars=128)
        object.__setattr__(self, "time_ms", check_int("command time_ms", self.time_ms))
        object.__setattr__(self, "args", freeze_map("command args", self.args))
        if self.reply_to is not None:
            try:
                validate_publish_topic(self.reply_to)
            except TopicError as exc:
                raise CodecError(f"command reply_to: {exc}") from None
        object.__setattr__(self, "extra", freeze_extra(Command, self.extra))

    def to_wire(self) -> dict[str, Any]:
        body = {"device": self.device, "name": self.name, "id": self.command_id,
                "args": self.args, "time_ms": self.time_ms}
        if self.reply_to is not None:
            body["reply_to"] = self.reply_to
        return body

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Command:
        return cls(device=fields.get_str("device"), name=fields.get_str("name"),
                   command_id=fields.get_str("id"), time_ms=fields.get_int("time_ms"),
                   args=fields.get_map("args"), reply_to=fields.get_optional_str("reply_to"),
                   extra=extra)

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "type": self.TYPE, "version": self.VERSION, "device": self.device,
            "name": self.name, "command_id": self.command_id, "time_ms": self.time_ms,
            "args": jsonable(self.args), "reply_to": self.reply_to,
        }
        if self.extra:
            view["extra"] = jsonable(self.extra)
        return view
