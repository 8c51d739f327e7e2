"""End-to-end loss and duplication accounting from per-device sequence numbers.

Every sample a device publishes carries ``(epoch, seq)``: ``seq`` counts up
from 0 within an epoch, and the epoch changes only when the device lost its
sequence state. A receiver feeds what it sees into a :class:`SequenceTracker`
and reads back how many samples were received, missing (gaps) or duplicated,
however the broker reordered or redelivered them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def device(self, device: str) -> DeviceSequence:
        return self._devices[device]

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
