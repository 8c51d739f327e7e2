"""A live picture of the fleet from its streams: who is online, rates, loss.

:class:`FleetView` is fed decoded records and status payloads (by
:func:`attach`, from a :class:`~broker.session.BusSession`) and renders either
a full-screen table for a terminal or a one-line summary for logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.router import ReceivedMessage
from broker.session import BusSession
from schemas.errors import CodecError, TopicError
from schemas.messages import Birth, MetricsBatch, decode_record
from schemas.sequence import SequenceTracker
from schemas.topics import TopicKind, TopicTree

__all__ = ["FleetView", "attach"]

logger = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0


@dataclass(slots=True)
class DeviceRow:
    """What the view shows for one device."""

    status: str = "?"
    agent_version: str = ""
    batches: int = 0
    last_seen: float = 0.0
    last_values: dict[str, float] = field(default_factory=dict)
    arrivals: deque[tuple[float, int]] = field(default_factory=deque)


class FleetView:
    """Thread-safe fleet state: feed it messages, read a rendering."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.sequences = SequenceTracker()
        self.devices: dict[str, DeviceRow] = {}
        self.invalid = 0
        self.last_invalid = ""
        self.started = clock()

    def _row(self, device: str) -> DeviceRow:
        row = self.devices.get(device)
        if row is None:
            row = self.devices[device] = DeviceRow()
        return row

    def on_status(self, device: str, payload: bytes) -> None:
        with self._lock:
            self._row(device).status = payload.decode("utf-8", "replace")[:16]

    def on_birth(self, birth: Birth) -> None:
        with self._lock:
            self._row(birth.device).agent_version = birth.agent_version

    def on_metrics(self, batch: MetricsBatch) -> None:
        now = self._clock()
        with self._lock:
            row = self._row(batch.device)
            new = self.sequences.observe(batch.device, epoch=batch.epoch,
                                         first_seq=batch.first_seq, count=len(batch.samples))
            row.batches += 1
            row.last_seen = now
            row.arrivals.append((now, new))
            for sample in batch.samples:
                row.last_values[sample.name] = sample.value

    def on_invalid(self, topic: str, reason: str) -> None:
        with self._lock:
            self.invalid += 1
            self.last_invalid = f"{topic}: {reason}"

    def _rate(self, row: DeviceRow, now: float) -> float:
        while row.arrivals and row.arrivals[0][0] < now - RATE_WINDOW_S:
            row.arrivals.popleft()
        window = min(RATE_WINDOW_S, max(now - self.started, 1e-9))
        return sum(n for _, n in row.arrivals) / window

    def summary(self) -> str:
        """One line for logs and non-terminal output."""
        now = self._clock()
        with self._lock:
            rate = sum(self._rate(r, now) for r in self.devices.values())
            online = sum(1 for r in self.devices.values() if r.status == "online")
            return (f"devices={len(self.devices)} online={online} samples/s={rate:.0f} "
                    f"received={self.sequences.received} missing={self.sequences.missing} "
                    f"duplicates={self.sequences.duplicates} invalid={self.invalid}")

    def table(self, width_metrics: tuple[str, ...] = ("cpu_percent", "temp_c")) -> str:
        """A multi-line table for a terminal."""
        now = self._clock()
        lines = [
            f"{'device':<16} {'status':<8} {'samples/s':>9} {'received':>9} {'missing':>8} "
            f"{'dups':>5} {'age':>5}  " + "  ".join(f"{m:>11}" for m in width_metrics)
        ]
        with self._lock:
            for name in sorted(self.devices):
                row = self.devices[name]
                seq = self.sequences.devices().get(name)
                received = seq.received if seq else 0
                missing = seq.missing if seq else 0
                dups = seq.duplicates if seq else 0
                age = f"{now - row.last_seen:4.0f}s" if row.last_seen else "    -"
                values = "  ".join(
                    f"{row.last_values[m]:>11.1f}" if m in row.last_values else f"{'-':>11}"
                    for m in width_metrics
                )
                lines.append(
                    f"{name:<16} {row.status:<8} {self._rate(row, now):>9.1f} {received:>9} "
                    f"{missing:>8} {dups:>5} {age:>5}  {values}"
                )
        lines.append("")
        lines.append(self.summary())
        if self.last_invalid:
            lines.append(f"last invalid message: {self.last_invalid}")
        return "\n".join(lines)


def attach(view: FleetView, bus: BusSession) -> None:
    """Subscribe ``view`` to the fleet's status, birth and metrics topics on ``bus``."""
    tree: TopicTree = bus.topics

    def on_message(msg: ReceivedMessage) -> None:
        try:
            parsed = tree.parse(msg.topic)
        except TopicError as exc:
            view.on_invalid(msg.topic, str(exc))
            return
        if parsed.device is None:
            return
        if parsed.kind is TopicKind.STATUS:
            view.on_status(parsed.device, msg.payload)
            return
        try:
            record = decode_record(msg.payload)
        except CodecError as exc:
            logger.warning("undecodable message on %s: %s", msg.topic, exc)
            view.on_invalid(msg.topic, str(exc))
            return
        if isinstance(record, MetricsBatch):
            view.on_metrics(record)
        elif isinstance(record, Birth):
            view.on_birth(record)

    for topic_filter in (tree.all_status(), tree.all_births(), tree.all_metrics()):
        bus.subscribe(topic_filter, on_message, qos=1)
