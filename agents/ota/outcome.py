"""How an update ends on this device, and the record that makes the ending stick.

Every terminal phase is written to ``{update_id}/outcome.json`` before it is
published, so an offer repeated after a restart (or by a server that lost
track) is answered with what happened instead of downloading again.
"""

from __future__ import annotations

from pathlib import Path

from agents.ota.files import atomic_write
from schemas.errors import CodecError
from schemas.ota import OtaProgress

__all__ = ["OUTCOME", "read_outcome", "write_outcome"]

OUTCOME = "outcome.json"



def write_outcome(update_dir: Path, progress: OtaProgress) -> None:
    if not progress.terminal:
        raise ValueError(f"not a terminal phase: {progress.phase}")
    atomic_write(update_dir / OUTCOME, progress.to_json_bytes())


def read_outcome(update_dir: Path) -> OtaProgress | None:
    """The recorded outcome; None when there is none (or it is unreadable: ask again)."""
    try:
        data = (update_dir / OUTCOME).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CodecError(f"{update_dir / OUTCOME}: {exc}") from exc
    try:
        return OtaProgress.from_json_bytes(data)
    except CodecError:
        return None
