"""``[cluster]`` in coordinator.toml: several coordinators split the devices between them.

Operator configuration: strict, every error names the key.

``group``
    The name the members share (one level of ``{root}/_sys/cluster/{group}/...``).
``member``
    This coordinator's name in the group; default: its ``[broker] client_id``,
    which must then differ between the members.
``settle_s``
    How long a coordinator listens for the other members' retained presence
    after connecting before it takes any device (a start that took every
    device at once would only be corrected a moment later; harmless, as a
    device's samples are stored once whoever stores them, but pointless).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.placement.validation import from_table
from schemas.errors import ConfigError
from schemas.topics import validate_name

__all__ = ["ClusterConfig"]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The ``[cluster]`` table (see the module docstring)."""

    group: str = "coordinators"
    member: str | None = None
    settle_s: float = 0.5

    def __post_init__(self) -> None:
        for key in ("group", "member"):
            value = getattr(self, key)
            if value is None and key == "member":
                continue
            if not isinstance(value, str):
                raise ConfigError(f"cluster: {key} must be a name, not {value!r}")
            try:
                validate_name(value, key)
            except ValueError as exc:
                raise ConfigError(f"cluster: {exc}") from None
        if isinstance(self.settle_s, bool) or not isinstance(self.settle_s, int | float) \
                or not 0 <= self.settle_s <= 60:
            raise ConfigError(f"cluster: settle_s must be a number from 0 to 60, not {self.settle_s!r}")

    @classmethod
    def from_mapping(cls, data: object) -> ClusterConfig | None:
        """None when there is no ``[cluster]`` table (one coordinator takes every device)."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ConfigError("cluster must be a table ([cluster])")
        table: Mapping[str, Any] = data
        return from_table(cls, table, "cluster", "cluster")
