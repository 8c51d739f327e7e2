"""Reading the fleet's list of trusted signing keys from disk (the checks are in protocols.ota.trust)."""

from __future__ import annotations

from pathlib import Path

from protocols.ota.trust import KeyRing, parse_trusted
from schemas.errors import ConfigError

__all__ = ["TRUSTED_KEYS", "load_trusted"]

TRUSTED_KEYS = "trusted_keys.json"


def load_trusted(path: Path) -> KeyRing:
    """Read a ``trusted_keys.json`` (or the one in a keys directory)."""
    if path.is_dir():
        path = path / TRUSTED_KEYS
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read trusted keys {path}: {exc}") from exc
    return parse_trusted(data, str(path))
