"""Typed reads of a ``[cameras.detector]`` table: each one names the key it refuses.

Every backend reads its options through these, so a typo'd value fails the same
way whichever backend the operator picked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from broker.config_values import float_option, int_option
from schemas.errors import ConfigError

__all__ = ["float_option", "int_option", "labels_option", "path_option"]


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
