"""Reading an operator's TOML file, with the file named in every error."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

__all__ = ["load_toml"]


def load_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a missing, unreadable or malformed file is a :class:`ConfigError`."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
