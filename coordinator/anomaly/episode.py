"""One alert per episode: the gate that opens on a breach and closes after calm."""

from __future__ import annotations

__all__ = ["EpisodeGate"]


class EpisodeGate:
    """Turns a per-sample breach flag into episode openings.

    Alerting on every breaching sample floods operators during one incident;
    an episode opens on the first breach and closes only after ``close_after``
    consecutive normal samples, so a flapping score inside it stays quiet.

    >>> gate = EpisodeGate(close_after=2)
    >>> [gate.update(b) for b in (True, True, False, True, False, False, True)]
    [True, False, False, False, False, False, True]
    """

    __slots__ = ("breach_run", "close_after", "is_open", "normal_run")

    def __init__(self, close_after: int) -> None:
        self.close_after = close_after
        self.is_open = False
        self.normal_run = 0
        self.breach_run = 0

    def update(self, breach: bool) -> bool:
        """Record one sample; True when it opens a new episode (the one sample to alert on)."""
        if breach:
            self.normal_run = 0
            self.breach_run += 1
            if not self.is_open:
                self.is_open = True
                return True
            return False
        self.breach_run = 0
        if self.is_open:
            self.normal_run += 1
            if self.normal_run >= self.close_after:
                self.is_open = False
        return False
