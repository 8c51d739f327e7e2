"""Typed reads of an operator's configuration table: each failure names the key it refuses.

Shared by every strict table (detector backends, anomaly detectors, stores), so a
typo'd value fails the same way wherever the operator made it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Set
from typing import Any

from schemas.errors import ConfigError

__all__ = ["check_keys", "check_section_keys", "float_option", "int_option", "section_table", "str_option"]


def check_keys(where: str, options: Mapping[str, Any], known: Collection[str]) -> None:
    """Refuse keys that are not in ``known``, naming the key and the known ones."""
    for key in options:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")


def check_section_keys(section: str, data: Mapping[str, Any], known: Collection[str]) -> None:
    """Refuse keys of the ``[section]`` table not in ``known``, naming ``section.key``."""
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}; known keys: {', '.join(sorted(known))}")


def section_table(section: str, value: object) -> Mapping[str, Any]:
    """``value`` as the ``[section]`` table (empty when absent); anything else is an error."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{section} must be a table ([{section}])")
    return value


def float_option(where: str, options: Mapping[str, Any], key: str, default: float, *,
                 low: float, high: float, low_open: bool = False) -> float:
    """``options[key]`` as a finite float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number, not {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{where}: {key} must be in {bracket}{low}, {high}], not {value!r}")
    return float(value)


def int_option(where: str, options: Mapping[str, Any], key: str, default: int, *,
               low: int, high: int | float) -> int:
    """``options[key]`` as an integer in ``[low, high]`` (``high`` may be ``math.inf``: no bound)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {key} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: {key} must be between {low} and {high}, not {value!r}")
    return value


def str_option(where: str, options: Mapping[str, Any], key: str, default: str, *,
               choices: Set[str]) -> str:
    """``options[key]`` as one of ``choices``."""
    value = options.get(key, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(sorted(choices))}, not {value!r}")
    return value
