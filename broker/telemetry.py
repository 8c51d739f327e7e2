"""Publishing a device's telemetry with durable, gap-free sequence numbers.

The sequence numbers a batch carries are reserved in the same outbox commit
that queues the batch, so a crash can neither reuse a number nor leave a hole
that is not a real loss. The sequence epoch is fixed when the outbox is first
created (wall-clock milliseconds, so a device whose outbox was wiped starts a
larger epoch) and kept in it; a memory-only outbox starts a new epoch on every
start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from broker.outbox import OutboxMessage, SequenceSpan
from broker.session import ENVELOPE_CONTENT_TYPE, BusSession
from schemas.birth import Capacity
from schemas.errors import ConfigError
from schemas.messages import Birth, MetricSample, MetricsBatch, encode_record
from schemas.stored_ack import METRICS_STREAM

__all__ = ["MetricsPublisher", "birth_payload"]

logger = logging.getLogger(__name__)


class _Refused(Exception):
    """Rolls back a sequence reservation whose message the outbox refused."""


class MetricsPublisher:
    """Turns samples into sequenced metrics batches on a device session."""

    def __init__(self, session: BusSession, *, clock_ms: Callable[[], int] | None = None) -> None:
        device = session.config.device
        if device is None:
            raise ConfigError("publishing metrics needs a device session (set broker.device)")
        self.session = session
        self.device = device
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.epoch = session.outbox.set_meta_default("epoch", self._clock_ms())
        self.topic = session.topics.metrics(device)

    def publish(self, samples: Sequence[MetricSample]) -> bool:
        """Queue one batch durably; False (counted by the outbox) when it was refused."""
        if not samples:
            return True
        try:
            with self.session.transaction() as tx:
                first = tx.reserve_sequence(len(samples))
                batch = MetricsBatch(device=self.device, epoch=self.epoch, first_seq=first,
                                     samples=tuple(samples))
                message = OutboxMessage(self.topic, encode_record(batch), 1, False,
                                        ENVELOPE_CONTENT_TYPE,
                                        SequenceSpan(METRICS_STREAM, self.epoch, first, len(samples)))
                if tx.put(message) is None:
                    raise _Refused
        except _Refused:
            return False
        return True


def birth_payload(
    device: str,
    epoch: int,
    *,
    agent_version: str,
    capabilities: Sequence[str] = (),
    versions: Mapping[str, str] | None = None,
    groups: Sequence[str] = (),
    clock_ms: Callable[[], int] | None = None,
    capacity: Callable[[], Capacity | None] | None = None,
) -> Callable[[], bytes]:
    """A callable that encodes a fresh birth record for each connection.

    ``capabilities`` and ``versions`` are read at each call, so parts that add theirs
    after this is made (before the connection) are in the birth; so is ``capacity()``
    (measured in the background: the next birth carries it).
    """
    now = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def make() -> bytes:
        return encode_record(Birth(device=device, epoch=epoch, agent_version=agent_version,
                                   capabilities=tuple(capabilities), groups=tuple(groups),
                                   versions=dict(versions or {}), time_ms=now(),
                                   capacity=capacity() if capacity is not None else None))

    return make
