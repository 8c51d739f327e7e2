"""Per-device rate limits of ingest: a flooding device is refused and flagged, the others go on.

Two token buckets per device, one for messages (checked before a message is
decoded, so a flood costs a dictionary look-up each) and one for samples (or
detection frames), each refilled at its rate and holding ``burst_s`` seconds
of it, so a device that sends its outbox after an outage is not refused while
one that keeps sending faster is. The set of devices is bounded: past
``max_devices`` a new device is refused (``too_many_devices``).

Pure logic: the caller passes the time (``time.monotonic`` seconds).
"""

from __future__ import annotations

from collections import Counter

__all__ = ["FLAG_WINDOW_S", "DeviceRates"]

#: A device stays flagged this long after its last refused message.
FLAG_WINDOW_S = 60.0


class DeviceRates:
    """Token buckets per device, and which devices were refused lately."""

    __slots__ = ("_buckets", "_flagged", "_new", "burst_s", "max_devices", "message_cap", "messages_per_s",
                 "refused", "sample_cap", "samples_per_s")

    def __init__(self, *, messages_per_s: float, samples_per_s: float, burst_s: float,
                 max_devices: int) -> None:
        self.messages_per_s = messages_per_s
        self.samples_per_s = samples_per_s
        self.burst_s = burst_s
        self.max_devices = max_devices
        self.message_cap = max(messages_per_s * burst_s, 1.0)
        self.sample_cap = max(samples_per_s * burst_s, 1.0)
        #: device -> [message tokens, sample tokens, time of the last refill]
        self._buckets: dict[str, list[float]] = {}
        #: device -> time of its last refused message
        self._flagged: dict[str, float] = {}
        #: Messages refused per device (rate_limited), since the start.
        self.refused: Counter[str] = Counter()
        self._new: list[str] = []

    def admit(self, device: str, now: float) -> str | None:
        """Take one message of ``device``: None if it may go on, else the refusal's reason."""
        bucket = self._buckets.get(device)
        if bucket is None:
            if len(self._buckets) >= self.max_devices:
                return "too_many_devices"
            bucket = self._buckets[device] = [self.message_cap, self.sample_cap, now]
        elapsed = now - bucket[2]
        if elapsed > 0:
            bucket[0] = min(self.message_cap, bucket[0] + elapsed * self.messages_per_s)
            bucket[1] = min(self.sample_cap, bucket[1] + elapsed * self.samples_per_s)
            bucket[2] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return None
        self._refuse(device, now)
        return "rate_limited"

    def take_samples(self, device: str, count: int, now: float) -> bool:
        """Take ``count`` samples of an admitted message of ``device``; False (refused) if over its rate."""
        bucket = self._buckets[device]
        if bucket[1] >= count:
            bucket[1] -= count
            return True
        self._refuse(device, now)
        return False

    def take_newly_flagged(self) -> list[str]:
        """Devices flagged since the last call (refused after a quiet :data:`FLAG_WINDOW_S`), to log once."""
        found, self._new = self._new, []
        return found

    def flagged(self, now: float) -> list[str]:
        """Devices refused for their rate within the last :data:`FLAG_WINDOW_S` seconds."""
        return sorted(d for d, t in self._flagged.items() if now - t <= FLAG_WINDOW_S)

    def _refuse(self, device: str, now: float) -> None:
        last = self._flagged.get(device)
        self._flagged[device] = now
        self.refused[device] += 1
        if last is None or now - last > FLAG_WINDOW_S:
            self._new.append(device)
