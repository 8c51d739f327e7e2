"""The SQL store's write path and queries, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from coordinator.store import (
    AnomalyRecord,
    DeadLetterRecord,
    DetectionRecord,
    EventRecord,
    SampleRecord,
    SqlStore,
    StoreError,
    WriteBatch,
)
from coordinator.store.sql_write import merge_sequence_state
from schemas.birth import Birth
from schemas.metrics import MetricColumns
from schemas.sequence import DeviceSequence, SequenceTracker
from tests.test_store_support import StoreFactory, backend, open_backend

__all__ = ["backend", "open_backend"]

T0 = 1_763_900_000_000


def samples(device: str, first: int, count: int, *, epoch: int = 1, name: str = "cpu") -> list[SampleRecord]:
    return [SampleRecord(device, epoch, seq, T0 + seq * 1000, name, seq * 0.25)
            for seq in range(first, first + count)]


def test_a_redelivered_batch_is_stored_once_and_counted(open_backend: StoreFactory) -> None:
    store = open_backend()
    batch = WriteBatch(samples=samples("gw-1", 0, 500))
    first = store.write_batch(batch)
    second = store.write_batch(batch)
    assert (first.samples_new, first.samples_duplicate) == (500, 0)
    assert (second.samples_new, second.samples_duplicate) == (0, 500)
    overlapping = store.write_batch(WriteBatch(samples=samples("gw-1", 400, 200)))
    assert (overlapping.samples_new, overlapping.samples_duplicate) == (100, 100)
    assert store.count_samples() == 600
    assert store.count_samples("gw-1") == 600
    assert store.count_samples("gw-2") == 0


def test_same_seq_in_a_new_epoch_or_another_device_is_a_new_sample(open_backend: StoreFactory) -> None:
    store = open_backend()
    result = store.write_batch(WriteBatch(samples=[*samples("gw-1", 0, 3), *samples("gw-1", 0, 3, epoch=2),
                                                   *samples("gw-2", 0, 3)]))
    assert (result.samples_new, result.samples_duplicate) == (9, 0)


def test_samples_round_trip_in_time_order_within_a_half_open_range(open_backend: StoreFactory) -> None:
    store = open_backend()
    mixed = [SampleRecord("gw-1", 1, 2, T0 + 2000, "cpu", 7), SampleRecord("gw-1", 1, 0, T0, "cpu", 1.5),
             SampleRecord("gw-1", 1, 1, T0 + 1000, "mem", -2.25e9),
             SampleRecord("gw-1", 1, 3, T0 + 3000, "cpu", 0.1)]
    store.write_batch(WriteBatch(samples=mixed))
    cpu = store.samples("gw-1", "cpu")
    assert [(s.seq, s.time_ms, s.value) for s in cpu] == [(0, T0, 1.5), (2, T0 + 2000, 7.0),
                                                          (3, T0 + 3000, 0.1)]
    assert store.samples("gw-1", "mem") == [SampleRecord("gw-1", 1, 1, T0 + 1000, "mem", -2.25e9)]
    assert [s.seq for s in store.samples("gw-1", "cpu", since_ms=T0 + 1, until_ms=T0 + 3000)] == [2]
    assert store.samples("gw-9", "cpu") == []


def test_detections_round_trip_and_a_redelivered_frame_is_stored_once(open_backend: StoreFactory) -> None:
    store = open_backend()
    frame = [DetectionRecord("cam-1", "front", 3, 10, T0, "person", 0.875, (0.125, 0.25, 0.5, 0.75), 7),
             DetectionRecord("cam-1", "front", 3, 10, T0, "car", 0.5, (0.0, 0.0, 1.0, 1.0), None)]
    other = [DetectionRecord("cam-1", "back", 3, 10, T0 + 5, "dog", 0.25, (0.5, 0.5, 0.625, 0.625), 1)]
    first = store.write_batch(WriteBatch(detections=frame + other))
    again = store.write_batch(WriteBatch(detections=frame))
    assert (first.detections_new, first.detections_duplicate) == (3, 0)
    assert (again.detections_new, again.detections_duplicate) == (0, 2)
    assert store.detections("cam-1", "front") == frame
    assert store.detections("cam-1") == frame + other
    assert store.detections("cam-1", since_ms=T0 + 1) == other


def test_events_round_trip_and_a_redelivered_event_is_stored_once(open_backend: StoreFactory) -> None:
    store = open_backend()
    start = {"type": "start", "version": 1, "camera": "front", "track_id": 7, "label": "person",
             "confidence": 0.82, "box": [0.41, 0.22, 0.58, 0.91], "time_ms": T0}
    end = {**start, "type": "end", "time_ms": T0 + 4444, "duration_ms": 4444, "reason": "lost"}
    first = store.write_batch(WriteBatch(events=[EventRecord("cam-1", "front", T0 + 5, start),
                                                 EventRecord("cam-1", "front", T0 + 4450, end)]))
    again = store.write_batch(WriteBatch(events=[EventRecord("cam-1", "front", T0 + 9, start)]))
    assert (first.events_new, again.events_new, again.events_duplicate) == (2, 0, 1)
    assert store.events("cam-1") == [end, start]
    assert store.events("cam-1", camera="back") == []


def test_births_are_stored_once_and_update_the_device(open_backend: StoreFactory) -> None:
    store = open_backend()
    birth = Birth(device="gw-1", epoch=42, agent_version="0.1.0", time_ms=T0, capabilities=("metrics",),
                  versions={"python": "3.11"})
    rebirth = Birth(device="gw-1", epoch=43, agent_version="0.2.0", time_ms=T0 + 60_000)
    first = store.write_batch(WriteBatch(births=[birth]))
    again = store.write_batch(WriteBatch(births=[birth, rebirth]))
    assert (first.births_new, again.births_new, again.births_duplicate) == (1, 1, 1)
    assert store.births("gw-1") == [birth.to_json(), rebirth.to_json()]
    (device,) = store.devices()
    assert (device.birth_epoch, device.birth_ms, device.agent_version) == (43, T0 + 60_000, "0.2.0")
    # A late, older birth (a retained message redelivered) does not roll the device back.
    store.write_batch(WriteBatch(births=[birth]))
    assert store.devices()[0].agent_version == "0.2.0"


def test_devices_track_first_and_last_seen_and_the_newest_status(open_backend: StoreFactory) -> None:
    store = open_backend()
    store.write_batch(WriteBatch(samples=samples("gw-1", 0, 2), statuses=[("gw-1", "online", T0)],
                                 seen_ms=T0 + 10))
    store.write_batch(WriteBatch(statuses=[("gw-1", "offline", T0 + 500), ("gw-2", "online", T0 + 7)]))
    store.write_batch(WriteBatch(statuses=[("gw-1", "online", T0 + 100)]))  # older, arrives late
    gw1, gw2 = store.devices()
    assert (gw1.id, gw1.first_seen_ms, gw1.last_seen_ms) == ("gw-1", T0 + 10, T0 + 500)
    assert (gw1.last_status, gw1.last_status_ms) == ("offline", T0 + 500)
    assert (gw2.id, gw2.last_status, gw2.first_seen_ms, gw2.birth_epoch) == ("gw-2", "online", T0 + 7, None)


def test_anomalies_round_trip_newest_first_with_filters(open_backend: StoreFactory) -> None:
    store = open_backend()
    spike = AnomalyRecord("gw-1", "cpu", T0, 12.5, 99.0, 4.0, 10.0, 30.0, "cpu 99 above 10..30", "critical")
    drift = AnomalyRecord("gw-1", "temp", T0 + 1, 4.5, None, None, None, None, "", "warning", "drift")
    other = AnomalyRecord("gw-2", "cpu", T0 + 2, 5.0)
    result = store.write_batch(WriteBatch(anomalies=[spike, drift, other]))
    assert result.anomalies == 3
    assert store.anomalies() == [other, drift, spike]
    assert store.anomalies(device="gw-1", metric="cpu") == [spike]
    assert store.anomalies(since_ms=T0 + 1, limit=1) == [other]


def test_dead_letters_keep_binary_payloads_exactly(open_backend: StoreFactory) -> None:
    store = open_backend()
    garbage = bytes(range(256)) * 3 + b"\x00"
    letters = [DeadLetterRecord(T0, "edgebus/gw-1/metrics", "malformed", "bad magic b'\\x00\\x01'", garbage),
               DeadLetterRecord(T0 + 1, "edgebus/x/y/z", "bad_topic", "unknown topic", b"")]
    assert store.write_batch(WriteBatch(dead_letters=letters)).dead_letters == 2
    assert store.dead_letters() == letters[::-1]
    assert store.dead_letters(limit=1) == [letters[1]]


def test_sequence_state_survives_reopening(open_backend: StoreFactory) -> None:
    tracker = SequenceTracker()
    tracker.observe("gw-1", epoch=7, first_seq=0, count=10)
    tracker.observe("gw-1", epoch=7, first_seq=15, count=5)
    tracker.observe("gw-1", epoch=7, first_seq=15, count=5)
    tracker.observe("cam-1/front", epoch=2, first_seq=0, count=3)
    store = open_backend()
    store.write_batch(WriteBatch(samples=samples("gw-1", 0, 10), sequence_state=tracker.devices()))
    store.close()
    reopened = open_backend()
    state = reopened.load_sequence_state()
    assert state == tracker.devices()
    assert (state["gw-1"].received, state["gw-1"].missing, state["gw-1"].duplicates) == (15, 5, 5)
    reopened.save_sequence_state({"gw-1": DeviceSequence(8, [[0, 1]], 1, 0, 2)})
    assert reopened.load_sequence_state()["gw-1"] == DeviceSequence(8, [[0, 1]], 1, 0, 2)
    assert reopened.load_sequence_state()["cam-1/front"] == tracker.device("cam-1/front")


def test_a_failing_batch_leaves_nothing_behind(open_backend: StoreFactory) -> None:
    store = open_backend()
    # A score of None violates NOT NULL after the samples went in: the whole batch rolls back.
    no_score = AnomalyRecord("gw-1", "cpu", T0, None)  # type: ignore[arg-type]
    bad = WriteBatch(samples=samples("gw-1", 0, 5), anomalies=[no_score])
    with pytest.raises(StoreError) as caught:
        store.write_batch(bad)
    assert caught.value.__cause__ is not None
    assert store.count_samples() == 0
    assert store.devices() == []


def test_an_empty_batch_writes_nothing(open_backend: StoreFactory) -> None:
    store = open_backend()
    result = store.write_batch(WriteBatch())
    assert (result.new, result.duplicates) == (0, 0)


def test_an_unreachable_database_is_a_store_error() -> None:
    store = SqlStore.open("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
            store.migrate()
    finally:
        store.close()


def test_alerts_from_the_anomaly_engine_are_stored_as_they_are(open_backend: StoreFactory) -> None:
    from coordinator.anomaly.alert import Alert, AlertKind, Severity

    alert = Alert(device="gw-1", metric="cpu", time_ms=T0, value=97.0, score=9.5, threshold=4.0,
                  expected_low=10.0, expected_high=30.0, explanation="cpu 97 far above 10..30",
                  severity=Severity.CRITICAL, kind=AlertKind.DEVIATION)
    store = open_backend()
    store.write_batch(WriteBatch(anomalies=[alert]))
    assert store.anomalies() == [AnomalyRecord("gw-1", "cpu", T0, 9.5, 97.0, 4.0, 10.0, 30.0,
                                               "cpu 97 far above 10..30", "critical", "deviation")]


def columns(device: str, first: int, count: int, names: tuple[str, ...] = ("cpu", "mem")) -> MetricColumns:
    """Samples as ingest hands them over: columns, a name index per sample."""
    index = [i % len(names) for i in range(count)]
    times = [T0 + (first + i) * 1000 for i in range(count)]
    values = [(first + i) * 0.25 for i in range(count)]
    return MetricColumns(device, 1, first, list(names), index, times, values)


def test_sample_columns_are_stored_like_sample_rows(open_backend: StoreFactory) -> None:
    store = open_backend()
    runs = [columns("gw-1", 0, 7000), columns("gw-2", 5, 3), columns("gw-1", 7000, 1)]  # > one chunk
    rows = [SampleRecord(c.device, c.epoch, c.first_seq + i, c.times[i], c.names[c.name_index[i]],
                         c.values[i])
            for c in runs for i in range(len(c.times))]
    result = store.write_batch(WriteBatch(sample_columns=runs, statuses=[("gw-2", "online", T0)]))
    assert (result.samples_new, result.samples_duplicate, result.devices) == (7004, 0, 2)
    for device, name in (("gw-1", "cpu"), ("gw-1", "mem"), ("gw-2", "cpu"), ("gw-2", "mem")):
        assert store.samples(device, name) == [r for r in rows if (r.device, r.name) == (device, name)]
    gw1, gw2 = store.devices()
    assert (gw1.first_seen_ms, gw1.last_seen_ms) == (T0, T0 + 7000 * 1000)
    assert (gw2.first_seen_ms, gw2.last_seen_ms, gw2.last_status) == (T0, T0 + 7000, "online")
    again = store.write_batch(WriteBatch(sample_columns=[columns("gw-2", 6, 4)]))
    assert (again.samples_new, again.samples_duplicate) == (2, 2)


def test_write_batches_is_one_transaction_of_batches_written_as_alone(open_backend: StoreFactory) -> None:
    store = open_backend()
    results = store.write_batches([WriteBatch(samples=samples("gw-1", 0, 5)), WriteBatch(),
                                   WriteBatch(samples=samples("gw-1", 3, 5))])
    assert [(r.samples_new, r.samples_duplicate) for r in results] == [(5, 0), (0, 0), (3, 2)]
    no_score = AnomalyRecord("gw-1", "cpu", T0, None)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.write_batches([WriteBatch(samples=samples("gw-2", 0, 5)),
                             WriteBatch(samples=samples("gw-3", 0, 5), anomalies=[no_score])])
    assert store.count_samples() == 8  # neither of the failed pair


def test_two_writers_creating_one_streams_account_both_count(open_backend: StoreFactory,
                                                             backend: str) -> None:
    """Both ends of a move write a stream no row exists for yet: the second merges into the first's row."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    store = open_backend()
    first, second = DeviceSequence(7, [[0, 10]], 10), DeviceSequence(7, [[10, 15], [20, 25]], 10)
    got: list[dict[str, DeviceSequence]] = []
    with store.engine.connect() as one, store.engine.connect() as two:
        with one.begin():
            merge_sequence_state(one, {"gw-1": first})  # inserted, not committed yet

            def other() -> None:
                with two.begin():  # its insert waits for the first transaction, then merges
                    got.append(merge_sequence_state(two, {"gw-1": second}))

            thread = threading.Thread(target=other)
            thread.start()
            thread.join(0.5)
            assert thread.is_alive()  # waiting on the row lock
        thread.join(10)
    assert got and got[0]["gw-1"].ranges == [[0, 15], [20, 25]]
    assert store.load_sequence_state()["gw-1"].ranges == [[0, 15], [20, 25]]
