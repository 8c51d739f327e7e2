"""Sequence accounting: what was received, missing and duplicated, in any order."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from schemas.sequence import SequenceTracker


def test_in_order_stream_has_no_loss() -> None:
    t = SequenceTracker()
    for first in range(0, 100, 10):
        assert t.observe("d", epoch=1, first_seq=first, count=10) == 10
    s = t.device("d")
    assert (s.received, s.missing, s.duplicates, s.ranges) == (100, 0, 0, [[0, 100]])


def test_new_epoch_restarts_and_old_epoch_is_duplicate() -> None:
    t = SequenceTracker()
    t.observe("d", epoch=1, first_seq=0, count=5)
    t.observe("d", epoch=2, first_seq=0, count=3)
    assert t.device("d").received == 3 and t.device("d").epochs_seen == 2
    assert t.observe("d", epoch=1, first_seq=5, count=2) == 0
    assert t.device("d").duplicates == 2


batches = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20)), max_size=60)


@given(batches)
def test_matches_a_set_model(observed: list[tuple[int, int]]) -> None:
    """Any order, overlap or repetition: the counts equal those of a plain set."""
    t = SequenceTracker()
    seen: set[int] = set()
    delivered = 0
    for first, count in observed:
        new = t.observe("d", epoch=0, first_seq=first, count=count)
        fresh = set(range(first, first + count)) - seen
        assert new == len(fresh)
        seen |= fresh
        delivered += count
    if not observed or not seen:
        return
    s = t.device("d")
    assert s.received == len(seen)
    assert s.duplicates == delivered - len(seen)
    assert s.missing == max(seen) + 1 - len(seen)
    flat = [i for lo, hi in s.ranges for i in range(lo, hi)]
    assert flat == sorted(seen)
    assert all(a[1] < b[0] for a, b in zip(s.ranges, s.ranges[1:], strict=False))


def test_fresh_says_which_numbers_are_redeliveries() -> None:
    t = SequenceTracker()
    assert t.fresh("d", epoch=1, first_seq=0, count=3) == [True, True, True]
    t.observe("d", epoch=1, first_seq=0, count=3)
    t.observe("d", epoch=1, first_seq=6, count=2)
    assert t.fresh("d", epoch=1, first_seq=2, count=6) == [False, True, True, True, False, False]
    assert t.fresh("d", epoch=0, first_seq=100, count=1) == [False]  # an older epoch: stale
    assert t.fresh("d", epoch=2, first_seq=0, count=1) == [True]     # a new epoch starts over


def test_tracker_round_trips_through_json() -> None:
    t = SequenceTracker()
    t.observe("d", epoch=1, first_seq=0, count=3)
    t.observe("d", epoch=1, first_seq=5, count=1)
    t.observe("d", epoch=1, first_seq=5, count=1)
    again = SequenceTracker.from_json(json.loads(json.dumps(t.to_json())))
    s = again.device("d")
    assert (s.received, s.missing, s.duplicates, s.ranges) == (4, 2, 1, [[0, 3], [5, 6]])
