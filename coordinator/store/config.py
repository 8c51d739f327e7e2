"""Strict configuration helpers and the retention policy shared by every store type.

``[store.retention]`` (all optional; ``0`` means keep forever / never)::

    raw_days = 7                # raw samples older than this are deleted
    downsample_after_days = 1   # complete intervals older than this are summarised into rollups
    downsample_interval_s = 60  # the rollup interval (avg, min, max, count)
    rollup_days = 365           # rollups older than this are deleted
    detection_days = 7          # detections and track events
    anomaly_days = 90
    dead_letter_days = 30
    dead_letter_max_rows = 100000   # and at most this many dead letters (the newest); 0: no count bound
    audit_days = 365            # the audit log (audit_events)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.config_values import check_section_keys, section_table
from schemas.errors import ConfigError

__all__ = ["DAY_MS", "RetentionConfig", "number", "text"]

DAY_MS = 86_400_000


def number(section: str, key: str, data: Mapping[str, Any], default: float, *, integer: bool = False,
           positive: bool = False) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise ConfigError(f"{section}.{key} must be {'an integer' if integer else 'a number'}, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{section}.{key} must be {'> 0' if positive else '>= 0'}, not {value}")
    return float(value)


def text(section: str, key: str, data: Mapping[str, Any], default: str | None) -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{section}.{key} must be a string, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long each kind of row is kept; see the module docstring for the keys."""

    raw_days: float = 7
    downsample_after_days: float = 1
    downsample_interval_s: int = 60
    rollup_days: float = 365
    detection_days: float = 7
    anomaly_days: float = 90
    dead_letter_days: float = 30
    dead_letter_max_rows: int = 100_000
    audit_days: float = 365

    @property
    def downsampling(self) -> bool:
        return self.downsample_after_days > 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None,
                     section: str = "store.retention") -> RetentionConfig:
        data = section_table(section, data)
        defaults = cls()
        check_section_keys(section, data, set(cls.__slots__))
        days = {key: number(section, key, data, getattr(defaults, key))
                for key in ("raw_days", "downsample_after_days", "rollup_days", "detection_days",
                            "anomaly_days", "dead_letter_days", "audit_days")}
        interval = int(number(section, "downsample_interval_s", data, defaults.downsample_interval_s,
                              integer=True, positive=True))
        max_rows = int(number(section, "dead_letter_max_rows", data, defaults.dead_letter_max_rows,
                              integer=True))
        config = cls(downsample_interval_s=interval, dead_letter_max_rows=max_rows, **days)
        if config.downsampling and 0 < config.raw_days < config.downsample_after_days:
            raise ConfigError(f"{section}.raw_days ({config.raw_days:g}) is below downsample_after_days "
                              f"({config.downsample_after_days:g}): raw samples would be deleted before "
                              "they are downsampled")
        return config
