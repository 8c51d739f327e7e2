"""End-to-end loss and duplication accounting from per-device sequence numbers.

Every sample a device publishes carries ``(epoch, seq)``: ``seq`` counts up
from 0 within an epoch, and the epoch changes only when the device lost its
sequence state. A receiver feeds what it sees into a :class:`SequenceTracker`
and reads back how many samples were received, missing (gaps) or duplicated,
however the broker reordered or redelivered them.

What a receiver sees is what devices claim, so the tracker also says which
claims it will not take (:meth:`SequenceTracker.admit`, :meth:`SequenceTracker.announce`):
an epoch moves only forward, only to one a birth announced, and never past the
receiver's clock by more than :attr:`SequenceLimits.max_future_ms` (an agent's
epoch is its clock when its outbox was made); a sequence number never jumps
past the highest seen by more than :attr:`SequenceLimits.max_seq_gap`. Without
these, one message with epoch ``2**63 - 1`` made every later sample of its
device look like a straggler of an older epoch, for good.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeviceSequence", "Refusal", "SequenceLimits", "SequenceTracker"]


@dataclass(frozen=True, slots=True)
class SequenceLimits:
    """How far a device's claims may reach (see the module docstring)."""

    max_future_ms: int = 86_400_000
    max_seq_gap: int = 10_000_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a batch or birth is not taken into the accounting: a dead-letter reason and a sentence."""

    reason: str
    detail: str


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

    def merged(self, other: DeviceSequence) -> DeviceSequence:
        """One stream's account as two receivers kept it, as one (a new copy; neither is changed).

        During a move of a device both its old and its new coordinator may
        account for it, each from what the other had committed when it read it.
        The newer epoch wins whole (epochs only move forward); within one epoch
        the numbers either saw are seen (a sample is counted by whoever took
        it), so ``received`` is what the ranges cover. ``duplicates`` is the
        larger of the two: each counted on from the same stored figure, so
        neither sum nor difference is exact, and it is only a diagnostic.
        """
        if self.epoch != other.epoch:
            newer = self if self.epoch > other.epoch else other
            return DeviceSequence(newer.epoch, [list(r) for r in newer.ranges], newer.received,
                                  newer.duplicates, max(self.epochs_seen, other.epochs_seen))
        union = DeviceSequence(self.epoch, [list(r) for r in self.ranges])
        for lo, hi in other.ranges:
            union.add_range(lo, hi - lo)
        return DeviceSequence(self.epoch, union.ranges, sum(hi - lo for lo, hi in union.ranges),
                              max(self.duplicates, other.duplicates),
                              max(self.epochs_seen, other.epochs_seen))

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
        #: The highest epoch each device announced in a birth this tracker accepted.
        self._announced: dict[str, int] = {}
        #: Per stream, where the last batch refused for a sequence jump ended.
        self._jumps: dict[str, int] = {}

    def announce(self, device: str, epoch: int, *, now_ms: int, limits: SequenceLimits) -> Refusal | None:
        """Take the epoch of ``device``'s birth as the one its streams may move to; or say why not.

        Refused: an epoch ahead of ``now_ms`` by more than the limit, or older
        than one already announced or counted for the device (epochs only move forward).
        """
        if epoch > now_ms + limits.max_future_ms:
            return Refusal("implausible_epoch", f"birth epoch {epoch} is more than {limits.max_future_ms} ms "
                                                f"ahead of this coordinator's clock ({now_ms})")
        state = self._devices.get(device)
        floor = max(self._announced.get(device, -1), -1 if state is None else state.epoch)
        if epoch < floor:
            return Refusal("epoch_regress", f"birth epoch {epoch} is older than epoch {floor} already seen "
                                            "for the device; epochs only move forward")
        self._announced[device] = epoch
        return None

    def admit(self, stream: str, device: str, *, epoch: int, first_seq: int, count: int, now_ms: int,
              limits: SequenceLimits) -> Refusal | None:
        """None if a batch of ``stream`` (a stream of ``device``) may be observed, else why not.

        A stream's first epoch is taken as it comes unless a birth announced a
        newer one; a later epoch only once a birth announced it; any epoch only
        within ``max_future_ms`` of ``now_ms``; within the current epoch, a
        batch that starts more than ``max_seq_gap`` past the highest number seen
        is refused, unless the batch before it was refused for the same jump
        (a device back from a long outage sends many; a forger's one message is not believed).
        """
        if epoch > now_ms + limits.max_future_ms:
            return Refusal("implausible_epoch", f"epoch {epoch} is more than {limits.max_future_ms} ms ahead "
                                                f"of this coordinator's clock ({now_ms})")
        state = self._devices.get(stream)
        if state is not None and epoch == state.epoch:
            highest = state.ranges[-1][1] - 1 if state.ranges else -1
            if first_seq - highest - 1 > limits.max_seq_gap:  # numbers skipped
                # A second batch out there too is believed (a long outage); one alone is not.
                pending = self._jumps.get(stream)
                if pending is not None and abs(first_seq - pending) <= limits.max_seq_gap:
                    del self._jumps[stream]
                    return None
                self._jumps[stream] = first_seq + count
                return Refusal("seq_jump", f"sequence number {first_seq} is more than {limits.max_seq_gap} "
                                           f"past the highest seen ({highest}) in epoch {epoch}")
            return None
        if state is not None and epoch < state.epoch:
            return None  # a straggler of an older epoch: observe counts it as a duplicate
        announced = self._announced.get(device)
        if state is not None and (announced is None or epoch > announced):
            return Refusal("unannounced_epoch", f"epoch {epoch} follows epoch {state.epoch} but no birth "
                                                f"announced it (last announced: {announced})")
        if state is None and announced is not None and epoch > announced:
            return Refusal("unannounced_epoch", f"epoch {epoch} is newer than the one the device's birth "
                                                f"announced ({announced})")
        return None

    def restore_announced(self, epochs: dict[str, int]) -> None:
        """Continue from the epochs that stored births announced."""
        self._announced.update(epochs)

    def announced(self) -> dict[str, int]:
        """A copy of the epochs announced per device."""
        return dict(self._announced)

    def discard_implausible(self, *, now_ms: int, limits: SequenceLimits) -> list[str]:
        """Forget streams and announcements whose epoch is ahead of ``now_ms`` beyond the limit.

        For accounting restored from an older version, which took any epoch:
        such a stream starts again at the next epoch its device sends. Returns what was forgotten.
        """
        ceiling = now_ms + limits.max_future_ms
        dropped = [k for k, s in self._devices.items() if s.epoch > ceiling]
        dropped += [f"birth of {d}" for d, e in self._announced.items() if e > ceiling]
        self._devices = {k: s for k, s in self._devices.items() if s.epoch <= ceiling}
        self._announced = {d: e for d, e in self._announced.items() if e <= ceiling}
        return dropped

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

    def take(self, stream: str, device: str, epoch: int, first_seq: int, count: int, now_ms: int,
             limits: SequenceLimits) -> Refusal | list[bool]:
        """:meth:`admit`, then :meth:`fresh` and :meth:`observe` in one call (ingest's path).

        The refusal, or for each of the ``count`` numbers whether it was new.
        """
        state = self._devices.get(stream)
        if state is not None and epoch == state.epoch and state.ranges and first_seq == state.ranges[-1][1]:
            # The usual case: the next batch of the current epoch, right after the highest seen.
            state.ranges[-1][1] += count
            state.received += count
            return [True] * count
        refusal = self.admit(stream, device, epoch=epoch, first_seq=first_seq, count=count, now_ms=now_ms,
                             limits=limits)
        if refusal is not None:
            return refusal
        fresh = self.fresh(stream, epoch=epoch, first_seq=first_seq, count=count)
        self.observe(stream, epoch=epoch, first_seq=first_seq, count=count)
        return fresh

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

    def replace(self, states: dict[str, DeviceSequence]) -> None:
        """Take these streams' accounting as given (a stream moving in from another receiver)."""
        for stream, state in states.items():
            self._devices[stream] = state
            self._jumps.pop(stream, None)

    def absorb(self, states: Mapping[str, DeviceSequence]) -> None:
        """Merge the stored accounts of these streams into the ones here (:meth:`DeviceSequence.merged`).

        A stream not tracked here is left out: it moved away, and its account with it.
        """
        for stream, stored in states.items():
            state = self._devices.get(stream)
            if state is not None:
                self._devices[stream] = state.merged(stored)

    def forget(self, streams: Iterable[str]) -> None:
        """Drop these streams' accounting (a stream moving out to another receiver)."""
        for stream in streams:
            self._devices.pop(stream, None)
            self._jumps.pop(stream, None)

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
