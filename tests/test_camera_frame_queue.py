"""The capture/detection hand-over: never blocks the producer, drops the oldest, counts drops."""

from __future__ import annotations

import threading

import pytest

from agents.camera.frame_queue import DropOldestQueue


def test_full_queue_drops_the_oldest_and_counts_it() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(3)
    evicted = [q.put(i) for i in range(5)]
    assert evicted == [None, None, None, 0, 1]
    assert (q.put_count, q.dropped, len(q)) == (5, 2, 3)
    assert [q.get(0), q.get(0), q.get(0)] == [2, 3, 4]
    assert q.get(0) is None


def test_producer_never_blocks_without_a_consumer() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(2)
    done = threading.Event()

    def produce() -> None:
        for i in range(1000):
            q.put(i)
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    thread.join(10)
    assert done.is_set()
    assert q.dropped == 998
    assert [q.get(0), q.get(0)] == [998, 999]


def test_close_lets_the_consumer_drain_then_end() -> None:
    q: DropOldestQueue[str] = DropOldestQueue(4)
    q.put("a")
    q.put("b")
    q.close()
    assert q.closed
    assert [q.get(1), q.get(1), q.get(1)] == ["a", "b", None]
    with pytest.raises(RuntimeError):
        q.put("c")


def test_get_waits_for_a_put_from_another_thread() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(1)
    timer = threading.Timer(0.05, q.put, args=(7,))
    timer.start()
    try:
        assert q.get(10) == 7
    finally:
        timer.cancel()


def test_get_times_out_with_none() -> None:
    assert DropOldestQueue[int](1).get(0.01) is None


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DropOldestQueue[int](0)
