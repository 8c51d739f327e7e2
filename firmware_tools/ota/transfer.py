"""What the server knows about one device's update while a rollout runs."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.ota.rollout import Outcome
from protocols.ota.sender import ChunkServer

__all__ = ["DeviceTransfer"]


@dataclass(slots=True)
class DeviceTransfer:
    """What the server knows about one device's update."""

    device: str
    server: ChunkServer
    total: int
    phase: str = "waiting"
    received: int = 0
    reason: str | None = None
    detail: str | None = None
    slot: str | None = None
    outcome: Outcome | None = None
    offers: int = 0
    last_heard: float = 0.0
    online: bool | None = None
