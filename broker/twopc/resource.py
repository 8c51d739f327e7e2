"""What a participant driver needs from the resource it guards (a database, an agent's cameras).

A resource is XA's resource manager in miniature: it prepares a piece of work
durably, so that it can later commit it even after a crash, or roll it back,
and it lists what it holds prepared, so that a restarted participant finds
work that was prepared but never voted on. Every method is called from the
participant driver's worker threads; ``prepare`` may block (waiting for a lock,
say) up to ``deadline_s`` seconds of the monotonic clock and must then refuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from protocols.twopc import Outcome

__all__ = ["PrepareAnswer", "Resource"]


@dataclass(frozen=True, slots=True)
class PrepareAnswer:
    """``ok``: the work is prepared durably. Otherwise ``reason`` says why not, for the caller."""

    ok: bool
    reason: str = ""


class Resource(Protocol):
    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        """Prepare ``payload`` durably under ``tx_id``; never raise for bad work, refuse with a reason."""

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        """Commit or roll back the prepared work of ``tx_id``. Idempotent: a repeat, or a rollback of
        work not held, is done. Raise only when the resource is unreachable (retried later)."""

    def prepared_ids(self) -> Iterable[str]:
        """Transaction ids the resource holds prepared and not finished (after a restart)."""
