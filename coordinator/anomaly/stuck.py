"""Stuck-sensor detection: a repeated value for longer than this metric ever holds still."""

from __future__ import annotations

import math

__all__ = ["StuckRun"]

#: Completed runs a constant-prone series must show before its longest one means anything.
MIN_RUNS = 6


class StuckRun:
    """The length of the current run of identical values and how long is too long.

    A frozen sensor often reports a plausible value, so value-based scores miss
    it. Two kinds of series repeat values for different reasons:

    * a series that rarely repeats its previous value (a noisy gauge): a run is
      suspicious when it is at least ``min_samples`` long and, given how often
      this metric repeats its previous value when healthy (``repeat_rate``,
      learned from the first samples of each run), at most ``improbability``
      likely;
    * a **constant-prone** series, one that repeats its previous value in at
      least ``prone_share`` of its normal samples (a square wave, a state that
      changes now and then), or a sparse one (mostly zeros): long runs are its
      normal, so a run is suspicious only when it is ``run_ratio`` times the
      longest run it has completed (once it has completed :data:`MIN_RUNS`
      over a whole season); a ``prone_share`` of 1 turns this rule off.

    A metric that has never changed is never stuck: constants are not sensors.
    Runs that were reported stuck teach nothing.
    """

    __slots__ = ("changes", "improbability", "last", "longest", "min_samples", "prone_share", "repeat_rate",
                 "repeat_share", "run", "run_ratio", "runs", "samples")

    def __init__(self, *, min_samples: int, improbability: float, prone_share: float = 1.0,
                 run_ratio: float = 3.0) -> None:
        self.min_samples = min_samples
        self.improbability = improbability
        self.prone_share = prone_share
        self.run_ratio = run_ratio
        self.last = math.nan
        self.run = 0
        self.repeat_rate = 0.0
        self.repeat_share = 0.0
        self.changes = 0
        self.runs = 0
        self.longest = 0
        self.samples = 0  # samples that taught repeat_share

    def update(self, value: float, flagged: bool = False) -> int:
        """Record one value; returns the current run length (1 when the value changed).

        ``flagged`` says the current run (before this value) was reported stuck.
        """
        same = value == self.last
        if not same and not math.isnan(self.last):
            self.changes = min(self.changes + 1, 1_000_000)
            if not flagged:
                self.runs = min(self.runs + 1, 1_000_000)
                self.longest = max(self.longest, self.run)
        self.run = self.run + 1 if same else 1
        self.last = value
        # Long runs are the thing being judged; learning from them would make stuck look normal.
        if self.run <= 3:
            self.repeat_rate += 0.02 * ((1.0 if same else 0.0) - self.repeat_rate)
        return self.run

    def learn(self) -> None:
        """Count the latest value toward the share of repeats, when the detector judged it normal."""
        self.samples = min(self.samples + 1, 1_000_000)
        alpha = max(1.0 / self.samples, 0.005)
        self.repeat_share += alpha * ((1.0 if self.run > 1 else 0.0) - self.repeat_share)

    def required(self, *, sparse: bool = False, seasoned: bool = True) -> int | None:
        """The run length that counts as stuck, or None while this metric cannot be judged.

        ``sparse`` says the series is mostly zeros (constant-prone whatever its share of repeats);
        ``seasoned`` that it has been watched for a whole season, without which the longest run of a
        constant-prone series (zeros at night, say) means nothing yet.
        """
        if self.prone_share < 1.0 and (sparse or self.repeat_share >= self.prone_share):
            if self.runs < MIN_RUNS or not seasoned:
                return None
            return max(self.min_samples, math.ceil(self.run_ratio * self.longest))
        if self.changes < 10:
            return None
        rate = self.repeat_rate
        if rate >= 0.99:
            return None
        if rate <= 0.0:
            return self.min_samples
        return max(self.min_samples, math.ceil(math.log(self.improbability) / math.log(rate)))

    def tail(self, run: int, required: int) -> float:
        """The chance of a healthy run this long, as the stuck rule sees it: ``improbability`` at
        ``required``, falling geometrically beyond (what a stuck alert's calibrated score is made from)."""
        return float(self.improbability ** (run / required))
