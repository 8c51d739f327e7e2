"""Chaos: a publisher streams through a link cut at seeded random moments.

Whatever the schedule, every accepted sample arrives (zero missing), and
duplicates stay within what at-least-once allows (at most the in-flight window
per cut). Marked slow: `make test-slow`.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from broker.telemetry import MetricsPublisher
from schemas.messages import MetricSample, MetricsBatch, decode_record
from schemas.sequence import SequenceTracker
from tests.brokers import RunningBroker
from tests.tcp_proxy import CuttableProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_through_random_cuts_loses_nothing(
    broker: RunningBroker, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    tracker = SequenceTracker()
    lock = threading.Lock()

    def on_metrics(msg: ReceivedMessage) -> None:
        record = decode_record(msg.payload)
        assert isinstance(record, MetricsBatch)
        with lock:
            tracker.observe(record.device, epoch=record.epoch, first_seq=record.first_seq,
                            count=len(record.samples))

    common = {"host": broker.host, "username": broker.username, "password": broker.password,
              "reconnect_min_delay": 0.05, "reconnect_max_delay": 0.3}
    sub = BusSession(BusConfig(port=broker.port, client_id=f"chaos-sub-{seed}",
                               clean_start=True, **common))
    sub.subscribe("edgebus/chaos/metrics", on_metrics)
    sub.start()
    assert sub.wait_connected(15)
    proxy = CuttableProxy(broker.host, broker.port)
    dev = BusSession(BusConfig(port=proxy.port, device="chaos", max_inflight=16,
                               outbox_path=tmp_path / "outbox.db", **common),
                     rng=random.Random(seed))
    pub = MetricsPublisher(dev)
    dev.start()
    cuts = 0
    published = 0
    try:
        deadline = time.monotonic() + 20
        next_cut = time.monotonic() + rng.uniform(0.2, 1.5)
        while time.monotonic() < deadline:
            n = rng.randint(1, 20)
            assert pub.publish([MetricSample(time_ms=published + i, name="v", value=i)
                                for i in range(n)])
            published += n
            if time.monotonic() >= next_cut:
                proxy.cut()
                cuts += 1
                time.sleep(rng.uniform(0.0, 0.8))
                proxy.restore()
                next_cut = time.monotonic() + rng.uniform(0.2, 1.5)
            time.sleep(rng.uniform(0, 0.01))
        assert dev.flush(30), f"{len(dev.outbox)} still queued"
        end = time.monotonic() + 15
        while time.monotonic() < end:
            with lock:
                if tracker.received >= published:
                    break
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        dev.stop()
        sub.stop()
        proxy.close()
    seq = tracker.device("chaos")
    assert cuts >= 5
    assert seq.received == published
    assert seq.missing == 0
    # at-least-once: only batches in flight at a cut may arrive twice
    assert seq.duplicates <= cuts * 16 * 20
