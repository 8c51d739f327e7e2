"""One alert per episode: the gate that opens on a breach and closes after calm."""

from __future__ import annotations

from typing import Any

__all__ = ["EpisodeGate"]

#: How much noisier than usual a stream may be for its episode to close.
SETTLED = 1.5
#: How near its threshold (as a share of it) a level still moving may be for its episode to close.
SETTLED_DRIFT = 0.5


class EpisodeGate:
    """Turns a per-sample breach flag into episode openings.

    Alerting on every breaching sample floods operators during one incident;
    an episode opens on the first breach and closes only after enough
    consecutive normal samples, so a flapping score inside it stays quiet.
    Enough is ``close_after``, or ``close_span`` times the episode's span
    (from its first breach to its latest) when that is longer: a long, noisy
    anomaly whose score dips below the threshold now and then stays one
    episode, while a spike's episode still closes after ``close_after``.
    When the caller says how much noisier than usual the stream is now, the
    episode also waits until that is at most :data:`SETTLED` (a noisy anomaly
    the detector learned to live with is not over until the noise is), until
    the drift chart, when the caller gives it, is at most :data:`SETTLED_DRIFT`
    of its threshold (a drift whose level the detector accepted is not over
    while the level keeps moving: closing then alerts again and again along
    one ramp) and,
    unless the episode was a blip (a span of at most ``close_after``), for
    ``min_calm`` consecutive samples that were settled so (the time a noise
    scale takes to show it: a long noisy anomaly's noise, measured over that
    memory, dips to :data:`SETTLED` now and then, and an episode closed on one
    such dip lets the detector learn the anomaly as normal and alert when it
    ends); or a hundred times as many calm samples. ``close_span = 0`` is a
    fixed count.

    >>> gate = EpisodeGate(close_after=2)
    >>> [gate.update(b) for b in (True, True, False, True, False, False, True)]
    [True, False, False, False, False, False, True]
    >>> gate = EpisodeGate(close_after=2, close_span=1.0)
    >>> [gate.update(b) for b in (True, True, True, False, False, True, False, False, False)]
    [True, False, False, False, False, False, False, False, False]
    >>> gate.is_open, gate.span
    (True, 6)
    """

    __slots__ = ("age", "breach_run", "close_after", "close_span", "is_open", "min_calm", "normal_run",
                 "settled_run", "span")

    def __init__(self, close_after: int, close_span: float = 0.0, min_calm: int = 0) -> None:
        self.close_after = close_after
        self.close_span = close_span
        self.min_calm = min_calm
        self.is_open = False
        self.normal_run = 0
        self.breach_run = 0
        self.age = 0  # samples since the episode opened, the opening one included
        self.span = 0  # age at the latest breach
        self.settled_run = 0  # consecutive calm samples that were settled (noise and drift), this episode

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Restore a pickled gate (pickle's ``(None, slots)`` state); one from before ``settled_run`` (an
        older build's checkpoint) counts its calm samples as settled, as that build did."""
        for name, value in state[1].items():
            setattr(self, name, value)
        if not hasattr(self, "settled_run"):
            self.settled_run = self.normal_run

    def update(self, breach: bool, noise: float = 1.0, drift: float = 0.0) -> bool:
        """Record one sample (``noise``: the stream's noise scale now over its usual one, ``drift``: its
        drift chart over the chart's threshold, when known); True when it opens a new episode (the one
        sample to alert on)."""
        if breach:
            self.normal_run = 0
            self.settled_run = 0
            self.breach_run += 1
            if not self.is_open:
                self.is_open = True
                self.age = self.span = 1
                return True
            self.age += 1
            self.span = self.age
            return False
        self.breach_run = 0
        if self.is_open:
            self.age += 1
            self.normal_run += 1
            needed = max(self.close_after, self.close_span * self.span)
            calm = noise <= SETTLED and drift <= SETTLED_DRIFT
            self.settled_run = self.settled_run + 1 if calm else 0
            settled = calm and (self.span <= self.close_after or self.settled_run >= self.min_calm)
            if self.normal_run >= needed and (self.close_span == 0.0 or settled
                                              or self.normal_run >= 100.0 * needed):
                self.is_open = False
        return False
