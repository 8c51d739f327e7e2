"""Value checks the placement records share; every error names the field it is about.

Operator-made records (the planner's configuration, pins, drains, cordons)
raise :class:`~schemas.errors.ConfigError`; records the coordinator builds from
what agents report raise a plain ``ValueError``. Both are ``ValueError``\\ s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any, TypeVar

from schemas.errors import ConfigError, TopicError
from schemas.topics import validate_device_id, validate_name

__all__ = ["agent_id", "agent_ids", "fraction", "frozen", "from_table", "non_negative", "positive", "time_ms",
           "whole", "workload_id"]

ErrorType = type[ValueError]
T = TypeVar("T")


def from_table(cls: type[T], data: Mapping[str, Any], where: str, own: str) -> T:
    """A strict config dataclass from a TOML table: an unknown key is an error naming it.

    The dataclass names itself ``own`` in its value errors; they are re-worded to ``where``,
    the table the operator wrote.
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    try:
        return cls(**data)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"{own}:", f"{where}:", 1)) from None


def _number(where: str, value: object, error: ErrorType) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{where} must be a number, not {type(value).__name__} {value!r:.40}")
    number = float(value)
    if not math.isfinite(number):
        raise error(f"{where} must be finite, not {number}")
    return number


def non_negative(where: str, value: object, error: ErrorType = ValueError) -> float:
    number = _number(where, value, error)
    if number < 0:
        raise error(f"{where} must be >= 0, not {number}")
    return number


def positive(where: str, value: object, error: ErrorType = ValueError) -> float:
    number = _number(where, value, error)
    if number <= 0:
        raise error(f"{where} must be > 0, not {number}")
    return number


def fraction(where: str, value: object, error: ErrorType = ValueError) -> float:
    number = _number(where, value, error)
    if not 0.0 <= number <= 1.0:
        raise error(f"{where} must be in [0, 1], not {number}")
    return number


def whole(where: str, value: object, minimum: int = 0, error: ErrorType = ValueError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{where} must be an integer, not {type(value).__name__} {value!r:.40}")
    if value < minimum:
        raise error(f"{where} must be >= {minimum}, not {value}")
    return value


def time_ms(where: str, value: object, error: ErrorType = ValueError) -> int:
    return whole(where, value, 0, error)


def agent_id(where: str, value: object, error: ErrorType = ValueError) -> str:
    """An agent's device id (the topic rules)."""
    try:
        return validate_device_id(value)  # type: ignore[arg-type]
    except TopicError as exc:
        raise error(f"{where}: {exc}") from None


def workload_id(where: str, value: object, error: ErrorType = ValueError) -> str:
    """A workload's id: a camera name or an inference job's name (the topic rules)."""
    try:
        return validate_name(value, "name")  # type: ignore[arg-type]
    except TopicError as exc:
        raise error(f"{where}: {exc}") from None


def agent_ids(where: str, value: object, error: ErrorType = ValueError) -> frozenset[str]:
    """A set of agent ids, from any iterable of them (a bare string is refused: it is not a set)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise error(f"{where} must be a set or list of agent ids, not {type(value).__name__}")
    return frozenset(agent_id(where, a, error) for a in value)


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy, keys sorted, so equal contents compare and print alike."""
    return MappingProxyType(dict(sorted(mapping.items())))
