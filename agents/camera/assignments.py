"""Which cameras this agent owns after the transactions it committed, durable across restarts.

``agent.toml``'s ``[[cameras]]`` are the starting point; a committed camera
move changes ownership, and that change must outlive a restart or a kill -9
(else the camera would come back on the agent that released it, and run
twice). The file ``{data_dir}/camera-assignments.json`` holds the overlay:
cameras taken (with their tables) and cameras released, each replaced
atomically and fsync'd before the camera is started or stopped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from broker.atomic_file import write_atomic
from schemas.errors import StorageError

__all__ = ["CameraAssignments"]


class CameraAssignments:
    """The overlay of committed moves on the configured cameras (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._taken: dict[str, dict[str, Any]] = {}
        self._released: set[str] = set()
        if path.exists():
            try:
                body = json.loads(path.read_text())
                self._taken = {str(k): dict(v) for k, v in body.get("taken", {}).items()}
                self._released = {str(x) for x in body.get("released", [])}
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                raise StorageError(f"{path}: unreadable camera assignments ({exc}); fix or remove the file "
                                   "(removing it returns to agent.toml's cameras)") from exc

    def cameras(self, configured: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The camera tables this agent runs: the configured ones, minus released, plus taken."""
        with self._lock:
            out = [t for t in configured if t.get("name") not in self._released and t.get("name")
                   not in self._taken]
            return out + [dict(t) for t in self._taken.values()]

    def take(self, camera: str, table: Mapping[str, Any]) -> None:
        with self._lock:
            self._taken[camera] = {**table, "name": camera}
            self._released.discard(camera)
            self._save()

    def release(self, camera: str) -> None:
        with self._lock:
            self._taken.pop(camera, None)
            self._released.add(camera)
            self._save()

    def _save(self) -> None:
        body = {"taken": self._taken, "released": sorted(self._released)}
        try:
            write_atomic(self.path, json.dumps(body, sort_keys=True, indent=1).encode())
        except OSError as exc:
            raise StorageError(f"cannot write camera assignments {self.path}: {exc}") from exc
