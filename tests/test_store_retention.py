"""Retention and downsampling: a pure function of the stored rows and ``now_ms``."""

from __future__ import annotations

from coordinator.store import (
    AnomalyRecord,
    DeadLetterRecord,
    DetectionRecord,
    RetentionConfig,
    Rollup,
    SampleRecord,
    WriteBatch,
)
from coordinator.store.config import DAY_MS
from tests.test_store_support import StoreFactory, backend, open_backend

__all__ = ["backend", "open_backend"]

T0 = 1_763_899_980_000  # on a minute boundary
POLICY = RetentionConfig(raw_days=7, downsample_after_days=1, downsample_interval_s=60, rollup_days=30,
                         detection_days=2, anomaly_days=3, dead_letter_days=4)


def three_minutes() -> list[SampleRecord]:
    """Nine samples, 20 s apart: three per minute, values 1..9."""
    return [SampleRecord("gw-1", 1, k, T0 + k * 20_000, "cpu", float(k + 1)) for k in range(9)]


def test_complete_old_intervals_are_summarised_once(open_backend: StoreFactory) -> None:
    store = open_backend(retention=POLICY)
    store.write_batch(WriteBatch(samples=three_minutes()))
    first = store.apply_retention(T0 + DAY_MS + 130_000)  # two minutes are a day old and complete
    assert (first.rollups_written, first.rolled_up_until_ms, first.samples_deleted) == (2, T0 + 120_000, 0)
    assert store.rollups("gw-1", "cpu") == [Rollup("gw-1", "cpu", 60, T0, 3, 2.0, 1.0, 3.0),
                                            Rollup("gw-1", "cpu", 60, T0 + 60_000, 3, 5.0, 4.0, 6.0)]
    later = store.apply_retention(T0 + DAY_MS + 600_000)
    assert later.rollups_written == 1  # only the new minute is read
    assert store.apply_retention(T0 + DAY_MS + 600_000).rollups_written == 0
    assert [r.avg for r in store.rollups("gw-1", "cpu")] == [2.0, 5.0, 8.0]
    assert store.count_samples() == 9  # raw history stays until raw_days


def test_raw_samples_go_after_raw_days_and_rollups_after_rollup_days(open_backend: StoreFactory) -> None:
    store = open_backend(retention=POLICY)
    store.write_batch(WriteBatch(samples=three_minutes()))
    store.apply_retention(T0 + DAY_MS + 600_000)
    week = store.apply_retention(T0 + 7 * DAY_MS + 50_000)  # the first three samples are over 7 days old
    assert week.samples_deleted == 3
    assert [s.seq for s in store.samples("gw-1", "cpu")] == [3, 4, 5, 6, 7, 8]
    assert len(store.rollups("gw-1", "cpu")) == 3
    month = store.apply_retention(T0 + 30 * DAY_MS + 60_000)
    assert (month.samples_deleted, month.rollups_deleted) == (6, 1)
    assert [r.bucket_ms for r in store.rollups("gw-1", "cpu")] == [T0 + 60_000, T0 + 120_000]


def test_replacing_raw_samples_when_raw_days_equals_downsample_after(open_backend: StoreFactory) -> None:
    policy = RetentionConfig(raw_days=1, downsample_after_days=1, downsample_interval_s=60)
    store = open_backend(retention=policy)
    store.write_batch(WriteBatch(samples=three_minutes()))
    result = store.apply_retention(T0 + DAY_MS + 180_000)
    assert (result.rollups_written, result.samples_deleted) == (3, 9)
    assert store.count_samples() == 0
    assert sum(r.count for r in store.rollups("gw-1", "cpu")) == 9


def test_without_downsampling_old_samples_are_only_deleted(open_backend: StoreFactory) -> None:
    store = open_backend(retention=RetentionConfig(raw_days=1, downsample_after_days=0))
    store.write_batch(WriteBatch(samples=three_minutes()))
    result = store.apply_retention(T0 + DAY_MS + 30_000)
    assert (result.rollups_written, result.samples_deleted) == (0, 2)
    assert store.rollups("gw-1", "cpu") == []


def test_detections_anomalies_and_dead_letters_expire_by_their_own_policy(open_backend: StoreFactory) -> None:
    store = open_backend(retention=POLICY)
    store.write_batch(WriteBatch(
        detections=[DetectionRecord("cam-1", "front", 1, 0, T0, "person", 0.9, (0.1, 0.1, 0.2, 0.2), 1)],
        anomalies=[AnomalyRecord("gw-1", "cpu", T0, 9.0)],
        dead_letters=[DeadLetterRecord(T0, "edgebus/x", "malformed", "bad", b"\xff")]))
    counts = []
    for days in (2, 3, 4):
        result = store.apply_retention(T0 + days * DAY_MS + 1)
        counts.append((result.detections_deleted, result.anomalies_deleted, result.dead_letters_deleted))
    assert counts == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert (store.detections("cam-1"), store.anomalies(), store.dead_letters()) == ([], [], [])
