"""What a leader knows about one follower's log."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Progress:
    """``match``: highest index known replicated; ``next``: next index to send (optimistic)."""

    match: int
    next: int
    recent_active: bool = False
    snapshot_cooldown: int = 0  # ticks before an unanswered snapshot is sent again
