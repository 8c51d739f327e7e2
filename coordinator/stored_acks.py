"""Telling each device which of its samples are stored: the end-to-end acknowledgement.

After every store commit the processor hands the committed sequence accounting
of the streams the commit touched to :meth:`StoredAckPublisher.committed`; the
device's whole acknowledgement (every stream of it this coordinator knows) is
then published retained at QoS 1 on ``{root}/{device}/cmd/stored``
(:mod:`schemas.stored_ack`), at most once per ``interval`` per device so a busy
device costs one small message per interval, not one per batch. Its agent
drops from its outbox only what an acknowledgement covers, so a broker that
dies with messages it had acknowledged (issue 17, break 8) loses nothing: the
agent sends them again.

Only committed accounting is ever acknowledged: a stream whose batch failed to
store (not a transient store outage, which the writer retries) is blocked
until restart, and the restarted coordinator acknowledges from the stored
accounting, so a sample is never confirmed that is not in the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

from broker.session import BusSession
from schemas.errors import BusError
from schemas.sequence import DeviceSequence
from schemas.stored_ack import METRICS_STREAM, StoredAck, StreamAck

__all__ = ["StoredAckPublisher"]

logger = logging.getLogger(__name__)

#: How often one device's acknowledgement is published at most, in seconds.
DEFAULT_INTERVAL = 0.5


def _split(stream: str) -> tuple[str, str]:
    """``gw-1`` -> (gw-1, metrics); ``gw-1/door`` -> (gw-1, detections/door): ingest's stream keys."""
    device, _, camera = stream.partition("/")
    return device, (f"detections/{camera}" if camera else METRICS_STREAM)


class StoredAckPublisher:
    """Publishes each device's stored acknowledgement after commits (see the module docstring).

    Not thread-safe: the processor's writer thread is its only caller once started.
    """

    def __init__(self, session: BusSession, *, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.interval = interval
        self._clock = clock
        self._streams: dict[str, dict[str, StreamAck]] = {}
        self._dirty: set[str] = set()
        self._last: dict[str, float] = {}
        self._blocked: set[str] = set()
        #: Acknowledgements published, and refused by the session's outbox.
        self.published = 0
        self.refused = 0

    def restore(self, states: Mapping[str, DeviceSequence]) -> None:
        """Start from the stored accounting (it is committed); published with the next commit."""
        self._update(states)
        self._dirty.clear()

    def adopt(self, states: Mapping[str, DeviceSequence]) -> None:
        """Streams moving in from another coordinator, as it stored them (safe beside the writer thread:
        dictionary writes only)."""
        self._update(states)

    def committed(self, states: Mapping[str, DeviceSequence]) -> None:
        """The accounting of streams a commit just made durable."""
        self._dirty |= self._update(states)

    def block(self, streams: Iterable[str]) -> None:
        """Never acknowledge these streams again in this process (a batch of theirs was not stored)."""
        for stream in streams:
            if stream not in self._blocked:
                logger.error("stream %s: a batch failed to store; not acknowledging it until restart, so "
                             "its device keeps and re-sends it", stream)
            self._blocked.add(stream)
            device, name = _split(stream)
            self._streams.get(device, {}).pop(name, None)

    @property
    def pending(self) -> bool:
        """Whether an acknowledgement waits for its interval."""
        return bool(self._dirty)

    def publish_due(self, *, force: bool = False) -> int:
        """Publish the acknowledgements whose interval passed (all with ``force``); how many."""
        now = self._clock()
        due = [d for d in self._dirty if force or now - self._last.get(d, float("-inf")) >= self.interval]
        for device in due:
            self._dirty.discard(device)
            self._last[device] = now
            ack = StoredAck(self._streams.get(device, {}))
            try:
                ok = self.session.publish(self.session.topics.stored_ack(device), ack.encode(), qos=1,
                                          retain=True, content_type="application/json")
            except BusError as exc:
                logger.warning("stored acknowledgement for %s not published: %s", device, exc)
                ok = False
            if ok:
                self.published += 1
            else:
                self.refused += 1
        return len(due)

    def _update(self, states: Mapping[str, DeviceSequence]) -> set[str]:
        devices: set[str] = set()
        for stream, state in states.items():
            if stream in self._blocked:
                continue
            device, name = _split(stream)
            self._streams.setdefault(device, {})[name] = StreamAck.newest(state.epoch, state.ranges)
            devices.add(device)
        return devices
