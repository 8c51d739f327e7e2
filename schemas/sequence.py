"""End-to-end loss and duplication accounting from per-device sequence numbers.

Every sample a device publishes carries ``(epoch, seq)``: ``seq`` counts up
from 0 within an epoch, and the epoch changes only when the device lost its
sequence state. A receiver feeds what it sees into a :class:`SequenceTracker`
and reads back how many samples were received, missing (gaps) or duplicated,
however the broker reordered or redelivered them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeviceSequence", "SequenceTracker"]


@dataclass(slots=True)
class DeviceSequence:
    """What one device's stream looks like from here, within its current epoch.

    The set of sequence numbers seen is kept as sorted, disjoint, half-open
    ranges, so memory stays small when delivery is in order (the usual case).
    """

    epoch: int
    ranges: list[list[int]] = field(default_factory=list)
    received: int = 0
    duplicates: int = 0
    epochs_seen: int = 1

    @property
    def highest(self) -> int:
        """The highest sequence number seen, or -1."""
        return self.ranges[-1][1] - 1 if self.ranges else -1

    @property
    def missing(self) -> int:
        """Sequence numbers below the highest seen that never arrived."""
        if not self.ranges:
            return 0
        covered = sum(hi - lo for lo, hi in self.ranges)
        return self.ranges[-1][1] - covered

    def contains(self, seq: int) -> bool:
        """Whether ``seq`` was already seen (a redelivery if it comes again)."""
        i = bisect.bisect_right(self.ranges, [seq, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= seq < self.ranges[i][1]

    def add_range(self, first: int, count: int) -> int:
        """Record ``count`` consecutive numbers from ``first``; returns how many were new."""
        lo, hi = first, first + count
        new = count
        merged: list[list[int]] = []
        placed = False
        for r in self.ranges:
            if r[1] < lo or r[0] > hi:
                if r[0] > hi and not placed:
                    merged.append([lo, hi])
                    placed = True
                merged.append(r)
                continue
            overlap = max(0, min(r[1], hi) - max(r[0], lo))
            new -= overlap
            lo, hi = min(lo, r[0]), max(hi, r[1])
        if not placed:
            merged.append([lo, hi])
        self.ranges = merged
        self.received += new
        self.duplicates += count - new
        return new


class SequenceTracker:
    """Per-device sequence accounting for a whole fleet.

    >>> t = SequenceTracker()
    >>> t.observe("cam-1", epoch=7, first_seq=0, count=10)
    10
    >>> t.observe("cam-1", epoch=7, first_seq=15, count=5)
    5
    >>> t.observe("cam-1", epoch=7, first_seq=15, count=5)
    0
    >>> s = t.device("cam-1"); (s.received, s.missing, s.duplicates)
    (15, 5, 5)
    """

    def __init__(self) -> None:
        self._devices: dict[str, DeviceSequence] = {}

    def observe(self, device: str, *, epoch: int, first_seq: int, count: int) -> int:
        """Record a batch; returns how many of its samples were new (not duplicates).

        A newer epoch restarts the device's accounting; a batch from an older
        epoch is a late straggler and counts as a duplicate.
        """
        if count < 0 or first_seq < 0:
            raise ValueError("first_seq and count must not be negative")
        state = self._devices.get(device)
        if state is None or epoch > state.epoch:
            epochs = 1 if state is None else state.epochs_seen + 1
            state = DeviceSequence(epoch=epoch, epochs_seen=epochs)
            self._devices[device] = state
        elif epoch < state.epoch:
            state.duplicates += count
            return 0
        return state.add_range(first_seq, count) if count else 0

    def fresh(self, device: str, *, epoch: int, first_seq: int, count: int) -> list[bool]:
        """For each of ``count`` numbers from ``first_seq``: not seen before (call before observe)."""
        state = self._devices.get(device)
        if state is None or epoch > state.epoch:
            return [True] * count
        if epoch < state.epoch:
            return [False] * count
        if not state.ranges or first_seq > state.highest:
            return [True] * count
        return [not state.contains(first_seq + i) for i in range(count)]

    def device(self, device: str) -> DeviceSequence:
        return self._devices[device]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able snapshot, so accounting survives a restart of the receiver."""
        return {d: {"epoch": s.epoch, "ranges": s.ranges, "received": s.received,
                    "duplicates": s.duplicates, "epochs_seen": s.epochs_seen}
                for d, s in self._devices.items()}

    @classmethod
    def from_states(cls, states: dict[str, DeviceSequence]) -> SequenceTracker:
        tracker = cls()
        tracker._devices = dict(states)
        return tracker

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SequenceTracker:
        tracker = cls()
        for device, s in data.items():
            tracker._devices[device] = DeviceSequence(
                epoch=int(s["epoch"]), ranges=[[int(lo), int(hi)] for lo, hi in s["ranges"]],
                received=int(s["received"]), duplicates=int(s["duplicates"]),
                epochs_seen=int(s["epochs_seen"]))
        return tracker

    def devices(self) -> dict[str, DeviceSequence]:
        return dict(self._devices)

    @property
    def received(self) -> int:
        return sum(s.received for s in self._devices.values())

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self._devices.values())

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self._devices.values())
