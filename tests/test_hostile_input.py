"""Regression tests for the breaks of issue 17 that hostile messages caused (3 to 7).

Each test sends what the hostile tester sent (scaled down where the original
needed gigabytes) and asserts what must hold instead; each failed on the code
before its fix. Only interfaces that existed before the fixes are used here,
so the tests show the old behaviour, not a missing name.
"""

from __future__ import annotations

import gc
import json
import random
import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import zstandard

from broker.session import BusSession
from coordinator.store.base import open_store
from coordinator.store.blocks import decode_block
from coordinator.store.plugins.sql import DEFAULT_DB_NAME
from schemas.envelope import FLAG_ZSTD, EnvelopeCodec
from schemas.errors import CodecError
from schemas.messages import DEFAULT_CODEC, Birth, MetricSample, MetricsBatch, encode_record
from schemas.metrics import MetricColumns
from schemas.sequence import DeviceSequence
from tests.brokers import RunningBroker
from tests.bus_helpers import WAIT, config_for, wait_until
from tests.coordinator_helpers import Parts, start_coordinator, stop_coordinator

MiB = 1024 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def metrics(device: str, epoch: int, first_seq: int, count: int, start_ms: int | None = None) -> bytes:
    t0 = now_ms() - 60_000 if start_ms is None else start_ms
    return encode_record(MetricsBatch(device=device, epoch=epoch, first_seq=first_seq, samples=tuple(
        MetricSample(t0 + (first_seq + i) * 1000, "cpu_percent", 20.0 + i % 3) for i in range(count))))


def birth(device: str, epoch: int) -> bytes:
    return encode_record(Birth(device=device, epoch=epoch, agent_version="1.0", time_ms=now_ms()))


def zstd_envelope(body: bytes) -> bytes:
    """``body`` in a zstd envelope, however it compresses (the encoder would send a small one plain)."""
    return bytes([0x45, 0x42, 1, FLAG_ZSTD, 0, 0, 0, 0]) + zstandard.ZstdCompressor(level=19).compress(body)


def sender(broker: RunningBroker) -> BusSession:
    bus = BusSession(config_for(broker, client_id="hostile-sender"))
    bus.start()
    assert bus.wait_connected(WAIT)
    return bus


def subscribed(broker: RunningBroker, data_dir: Path) -> Parts:
    """A coordinator (as in tests/coordinator_helpers.py) whose subscriptions the broker acknowledged."""
    parts = start_coordinator(broker, data_dir)
    assert parts[0].wait_subscribed(WAIT)
    return parts


def dead_reasons(parts: Parts) -> list[str]:
    return [letter.reason for letter in parts[3].dead_letters(limit=10_000)]


# -- break 3: one message with epoch 2**63-1 blinded the coordinator to a device, for good ------------


def test_break3_a_huge_epoch_does_not_blind_the_coordinator_also_after_a_restart(
        broker: RunningBroker, tmp_path: Path) -> None:
    device, epoch = "gw-3", now_ms() - 3_600_000  # an agent's epoch: its clock when its outbox was made
    bus = sender(broker)
    parts = subscribed(broker, tmp_path)
    try:
        bus.publish(f"edgebus/{device}/birth", birth(device, epoch), retain=True)
        bus.publish(f"edgebus/{device}/metrics", metrics(device, epoch, 0, 10))
        bus.publish(f"edgebus/{device}/metrics", metrics(device, 2**63 - 1, 0, 1))  # the hostile one
        bus.publish(f"edgebus/{device}/metrics", metrics(device, epoch, 10, 10))
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples(device) == 20), parts[3].count_samples(device)
        assert parts[1].drain(WAIT)
        assert parts[1].sequence_snapshot()[device].epoch == epoch
        assert len(parts[3].dead_letters()) == 1  # the hostile message, counted
    finally:
        stop_coordinator(parts)
    parts = subscribed(broker, tmp_path)  # the stored accounting must not carry it either
    try:
        bus.publish(f"edgebus/{device}/metrics", metrics(device, epoch, 20, 10))
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples(device) == 30), parts[3].count_samples(device)
        assert parts[1].drain(WAIT)
        state = parts[1].sequence_snapshot()[device]
        assert (state.epoch, state.received, state.missing, state.duplicates) == (epoch, 30, 0, 0)
    finally:
        stop_coordinator(parts)
        bus.stop()


def test_break3_accounting_stored_by_an_older_version_with_a_huge_epoch_heals_at_restart(
        mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    device, epoch = "gw-3", now_ms() - 3_600_000
    with open_store({}, data_dir=tmp_path) as store:
        store.save_sequence_state({device: DeviceSequence(epoch=2**63 - 1, ranges=[[0, 1]], received=1)})
    bus = sender(mosquitto_broker)
    parts = subscribed(mosquitto_broker, tmp_path)
    try:
        bus.publish(f"edgebus/{device}/metrics", metrics(device, epoch, 0, 10))
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples(device) == 10), parts[3].count_samples(device)
        assert parts[1].drain(WAIT)  # the store forgot it too: its merge does not bring the epoch back
        bus.publish(f"edgebus/{device}/metrics", metrics(device, epoch, 10, 10))
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples(device) == 20), parts[3].count_samples(device)
        assert parts[3].load_sequence_state()[device].epoch == epoch
    finally:
        stop_coordinator(parts)
        bus.stop()


# -- break 4: tiny envelopes that expand to millions of empty arrays stalled ingest ------------------


def bomb_bodies() -> list[bytes]:
    flat = b"\xdd" + (4_000_000).to_bytes(4, "big") + b"\x90" * 4_000_000  # [[], [], ... 4 million]
    inner = b"\xdc" + (65_000).to_bytes(2, "big") + b"\x90" * 65_000
    nested = b"\xdc" + (60).to_bytes(2, "big") + inner * 60  # 60 arrays of 65,000 empty arrays
    return [flat, nested]


@pytest.mark.parametrize("body", bomb_bodies(), ids=["flat", "nested"])
def test_break4_a_small_envelope_cannot_decode_into_millions_of_objects(body: bytes) -> None:
    envelope = zstd_envelope(body)
    assert len(envelope) < 1000 and len(body) <= EnvelopeCodec().max_body_bytes  # as small as reported
    gc.collect()
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="objects"):
            DEFAULT_CODEC.decode(envelope)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The body itself (4 MB) plus what the object budget allows; before: ~290 MB per message.
    assert peak < 40 * MiB, f"decoding took {peak / MiB:.0f} MiB"


def test_break4_bomb_envelopes_become_dead_letters_and_ingest_goes_on(
        mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    bus = sender(mosquitto_broker)
    parts = subscribed(mosquitto_broker, tmp_path)
    try:
        bomb = zstd_envelope(bomb_bodies()[0])
        for _ in range(10):
            bus.publish("edgebus/gw-4/metrics", bomb)
        bus.publish("edgebus/gw-ok/metrics", metrics("gw-ok", 1, 0, 5))
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples("gw-ok") == 5)
        assert wait_until(lambda: len(dead_reasons(parts)) == 10)
        assert set(dead_reasons(parts)) == {"too_large"}
    finally:
        stop_coordinator(parts)
        bus.stop()


# -- break 5: bodies declaring ever other sample counts grew the _CYCLES cache for good ----------------


def test_break5_bodies_of_ever_other_sizes_do_not_grow_memory_for_good() -> None:
    def body(count: int) -> dict[str, Any]:
        return {"type": "metrics", "v": 1, "device": "gw-5", "epoch": 1, "seq": 0, "t0": 0,
                "names": ["not a valid name!", "x"], "scale": [None, None], "idx": [0] * count,
                "dt": [0] * count, "vals": [0] * count}

    MetricColumns.from_body(body(10))  # warm up whatever is allocated once
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for k in range(250):
            assert MetricColumns.from_body(body(20_000 + k)) is None
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # Before: 250 cached name indexes of ~20,000 entries, ~40 MB kept after the bodies were gone.
    assert kept < 4 * MiB, f"{kept / MiB:.1f} MiB kept"


# -- break 6: no limit on metric names ------------------------------------------------------------------


def names_batch(device: str, first_seq: int, names: list[str]) -> bytes:
    t0 = now_ms() - 60_000
    return encode_record(MetricsBatch(device=device, epoch=1, first_seq=first_seq, samples=tuple(
        MetricSample(t0, name, 1.0) for name in names)))


def test_break6_a_device_cannot_add_metric_names_without_bound(
        mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    bus = sender(mosquitto_broker)
    parts = subscribed(mosquitto_broker, tmp_path)
    try:
        # One message with 80,000 names, then ten with 500 new names each.
        bus.publish("edgebus/gw-6/metrics", names_batch("gw-6", 0, [f"m{i}" for i in range(80_000)]))
        for k in range(10):
            bus.publish("edgebus/gw-6/metrics",
                        names_batch("gw-6", k * 500, [f"n{k}_{i}" for i in range(500)]))
        bus.publish("edgebus/gw-ok/metrics", metrics("gw-ok", 1, 0, 5))
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples("gw-ok") == 5)
        assert parts[1].drain(WAIT)
        names = parts[2].metrics_by_device().get("gw-6", set())
        assert 0 < len(names) <= 1_024, len(names)
        assert parts[3].count_samples("gw-6") == len(names)
        assert len(dead_reasons(parts)) >= 1 + 10 - 1_024 // 500
    finally:
        stop_coordinator(parts)
        bus.stop()


# -- break 7: a message amplified into hundreds of block rows carrying unused names ----------------------


def noise(seed: int, length: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(length))


def jumping_envelope(device: str, jump_ms: int) -> bytes:
    """400 samples whose times jump back and forth by ``jump_ms``, and 50 unused 1,000-character names."""
    deltas = [jump_ms if i % 2 else -jump_ms for i in range(400)]
    deltas[0] = 0
    body = {"type": "metrics", "v": 1, "device": device, "epoch": 1, "seq": 0, "t0": now_ms() - 7_200_000,
            "names": ["cpu_percent", *[noise(k, 1000) for k in range(50)]], "scale": [None] * 51,
            "idx": [0] * 400, "dt": deltas, "vals": [float(i % 7) for i in range(400)]}
    return EnvelopeCodec().encode(body)


def block_rows(data_dir: Path, device: str) -> list[tuple[int, int, bytes]]:
    with sqlite3.connect(data_dir / DEFAULT_DB_NAME) as db:
        return db.execute("SELECT epoch, first_seq, body FROM metric_blocks WHERE device = ?",
                          (device,)).fetchall()


def test_break7_one_message_is_not_amplified_into_many_block_rows(
        mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    bus = sender(mosquitto_broker)
    parts = subscribed(mosquitto_broker, tmp_path)
    try:
        over_an_hour, an_hour = jumping_envelope("gw-7a", 3_600_001), jumping_envelope("gw-7b", 3_600_000)
        assert len(over_an_hour) < 64 * 1024
        bus.publish("edgebus/gw-7a/metrics", over_an_hour)
        bus.publish("edgebus/gw-7b/metrics", an_hour)
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples("gw-7b") == 400)
        assert parts[1].drain(WAIT)
    finally:
        stop_coordinator(parts)
        bus.stop()
    # Times spanning more than an hour in one message: refused, not 400 rows.
    assert block_rows(tmp_path, "gw-7a") == []
    assert "time_span" in [letter.reason for letter in open_store({}, data_dir=tmp_path).dead_letters()]
    # Within an hour: one row, holding the names samples use and nothing else.
    rows = block_rows(tmp_path, "gw-7b")
    assert len(rows) == 1
    block = decode_block("gw-7b", rows[0][0], rows[0][1], rows[0][2])
    assert list(block.names) == ["cpu_percent"]
    assert len(rows[0][2]) < len(an_hour)


# -- an event nested too deeply killed the decoder thread -----------------------------------------------


def test_an_event_nested_too_deeply_is_a_dead_letter_and_ingest_goes_on(
        mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    bus = sender(mosquitto_broker)
    parts = subscribed(mosquitto_broker, tmp_path)
    try:
        bus.publish("edgebus/gw-e/events/door", b"[" * 100_000)
        bus.publish("edgebus/gw-e/events/door", json.dumps({"type": "start", "camera": "door"}).encode())
        bus.publish("edgebus/gw-ok/metrics", metrics("gw-ok", 1, 0, 5))
        assert bus.flush(WAIT)
        assert wait_until(lambda: parts[3].count_samples("gw-ok") == 5)
        assert parts[1].drain(WAIT)
        assert dead_reasons(parts) == ["bad_json"]
        assert len(parts[3].events("gw-e")) == 1
    finally:
        stop_coordinator(parts)
        bus.stop()

