"""BatchQueue: order kept, batches bounded, a full batch does not wait out the window, bounded puts."""

from __future__ import annotations

import threading

import pytest

from coordinator.batch_queue import BatchQueue


def test_items_come_out_in_order_in_batches_of_at_most_batch_items() -> None:
    q: BatchQueue[int] = BatchQueue(maxsize=100, batch_items=4, window=0.0)
    for i in range(10):
        assert q.put(i)
    assert [q.get_batch(), q.get_batch(), q.get_batch()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(q) == 0


@pytest.mark.timeout(30)
def test_a_full_batch_is_handed_over_without_waiting_for_the_window() -> None:
    q: BatchQueue[int] = BatchQueue(maxsize=100, batch_items=3, window=3600.0)
    got: list[list[int] | None] = []
    consumer = threading.Thread(target=lambda: got.append(q.get_batch()))
    consumer.start()
    for i in range(3):
        q.put(i)
    consumer.join(20)
    assert got == [[0, 1, 2]]  # with the hour-long window it would still be waiting


@pytest.mark.timeout(30)
def test_put_waits_while_full_and_gives_up_after_its_timeout() -> None:
    q: BatchQueue[str] = BatchQueue(maxsize=2, batch_items=10, window=0.0)
    assert q.put("a") and q.put("b")
    assert not q.put("c", timeout=0.05)  # full: refused after the timeout, nothing lost from the queue
    blocked = threading.Thread(target=q.put, args=("c",))
    blocked.start()
    assert q.get_batch() == ["a", "b"]
    blocked.join(20)
    assert q.get_batch() == ["c"]


@pytest.mark.timeout(30)
def test_close_hands_over_what_is_queued_then_none_and_wakes_everyone() -> None:
    q: BatchQueue[int] = BatchQueue(maxsize=1, batch_items=10, window=3600.0)
    q.put(1)
    waiting = threading.Thread(target=lambda: results.append(q.put(2)))
    results: list[bool] = []
    waiting.start()
    q.close()
    waiting.join(20)
    assert results == [False]
    assert q.get_batch() == [1]
    assert q.get_batch() is None
    assert not q.put(3)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        BatchQueue(maxsize=0, batch_items=1, window=0.0)


@pytest.mark.timeout(30)
def test_a_burst_that_ended_is_handed_over_without_waiting_for_the_window() -> None:
    q: BatchQueue[int] = BatchQueue(maxsize=100, batch_items=50, window=3600.0, idle=0.01)
    for i in range(5):
        q.put(i)
    assert q.get_batch() == [0, 1, 2, 3, 4]  # an hour-long window, but nothing more is coming
