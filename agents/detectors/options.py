"""Typed reads of a ``[cameras.detector]`` table: each one names the key it refuses.

Every backend reads its options through these, so a typo'd value fails the same
way whichever backend the operator picked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

__all__ = ["float_option", "int_option", "labels_option", "path_option"]


def float_option(where: str, options: Mapping[str, Any], key: str, default: float, *,
                 low: float, high: float, low_open: bool = False) -> float:
    """``options[key]`` as a float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number, not {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{where}: {key} must be in {bracket}{low}, {high}], not {value!r}")
    return float(value)


def int_option(where: str, options: Mapping[str, Any], key: str, default: int, *,
               low: int, high: int) -> int:
    """``options[key]`` as an integer in ``[low, high]``."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {key} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: {key} must be between {low} and {high}, not {value!r}")
    return value


def path_option(where: str, options: Mapping[str, Any], key: str, default: Path | None = None) -> Path:
    """``options[key]`` as a path to an existing file (``~`` expanded)."""
    value = options.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: {key} is required (a path to a model file)")
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ConfigError(f"{where}: {key} must be a file path, not {value!r}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{where}: {key} = {str(value)!r}: no such file ({path.absolute()})")
    return path


def labels_option(where: str, options: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    """``options[key]`` as a non-empty list of label strings, or None when absent."""
    value = options.get(key)
    if value is None:
        return None
    if (isinstance(value, str) or not isinstance(value, Sequence) or not value
            or not all(isinstance(label, str) and label for label in value)):
        raise ConfigError(f"{where}: {key} must be a non-empty list of names, not {value!r}")
    return tuple(value)
