"""Helpers for tests that watch a real broker through a :class:`BusSession`."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace

from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from schemas.messages import MetricsBatch, decode_record
from schemas.sequence import SequenceTracker
from tests.brokers import RunningBroker

WAIT = 15.0  # upper bound for any single wait; the happy path takes milliseconds


def config_for(broker: RunningBroker, **overrides: object) -> BusConfig:
    base = BusConfig(host=broker.host, port=broker.port, username=broker.username,
                     password=broker.password, reconnect_min_delay=0.05,
                     reconnect_max_delay=0.5, clean_start=True, client_id="unset")
    return replace(base, **overrides)  # type: ignore[arg-type]


class Inbox:
    """Collects messages from a subscription and waits for conditions on them."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMessage] = []
        self._cond = threading.Condition()

    def __call__(self, msg: ReceivedMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = WAIT) -> bool:  # type: ignore[no-untyped-def]
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def on(self, topic: str) -> list[ReceivedMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def payloads(self, topic: str) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages if m.topic == topic]

    def wait_last(self, topic: str, payload: bytes, timeout: float = WAIT) -> bool:
        """Whether the latest payload on ``topic`` is ``payload`` within ``timeout`` (a status, a state)."""
        return self.wait_for(lambda ms: self.payloads(topic)[-1:] == [payload], timeout)


def observer(broker: RunningBroker, topic_filter: str, name: str = "observer") -> tuple[BusSession, Inbox]:
    inbox = Inbox()
    bus = BusSession(config_for(broker, client_id=name))
    bus.subscribe(topic_filter, inbox)
    bus.start()
    assert bus.wait_subscribed(WAIT), bus.stats().last_error
    return bus, inbox


def tracked(inbox: Inbox) -> tuple[SequenceTracker, Counter[int]]:
    tracker = SequenceTracker()
    deliveries: Counter[int] = Counter()
    for m in list(inbox.messages):
        if not m.topic.endswith("/metrics"):
            continue
        record = decode_record(m.payload)
        if isinstance(record, MetricsBatch):
            tracker.observe(record.device, epoch=record.epoch, first_seq=record.first_seq,
                            count=len(record.samples))
            deliveries[record.first_seq] += 1
    return tracker, deliveries


def wait_until(predicate, timeout: float = WAIT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
