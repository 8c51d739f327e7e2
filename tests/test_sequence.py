"""Sequence accounting: what was received, missing and duplicated, in any order."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from schemas.sequence import DeviceSequence, SequenceLimits, SequenceTracker


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


# -- what the tracker will not take (issue 17, break 3) ------------------------------------------------

NOW = 1_763_900_000_000
LIMITS = SequenceLimits(max_future_ms=86_400_000, max_seq_gap=1_000)


def admit(t: SequenceTracker, epoch: int, first_seq: int, count: int = 1, stream: str = "d") -> str | None:
    refusal = t.admit(stream, "d", epoch=epoch, first_seq=first_seq, count=count, now_ms=NOW, limits=LIMITS)
    if refusal is None:
        t.observe(stream, epoch=epoch, first_seq=first_seq, count=count)
        return None
    return refusal.reason


def test_an_epoch_ahead_of_the_clock_is_refused_and_changes_nothing() -> None:
    t = SequenceTracker()
    assert admit(t, NOW - 5, 0, 10) is None
    assert admit(t, 2**63 - 1, 0) == "implausible_epoch"
    assert admit(t, NOW + 86_400_001, 0) == "implausible_epoch"
    assert t.announce("d", 2**63 - 1, now_ms=NOW, limits=LIMITS) is not None
    assert admit(t, NOW - 5, 10, 10) is None
    s = t.device("d")
    assert (s.epoch, s.received, s.duplicates, s.missing) == (NOW - 5, 20, 0, 0)


def test_an_epoch_moves_forward_only_to_one_a_birth_announced() -> None:
    t = SequenceTracker()
    assert admit(t, 100, 0, 5) is None  # a stream's first epoch is taken as it comes
    assert admit(t, 200, 0) == "unannounced_epoch"
    assert t.device("d").epoch == 100
    assert t.announce("d", 200, now_ms=NOW, limits=LIMITS) is None
    assert admit(t, 300, 0) == "unannounced_epoch"  # not the announced one either
    assert admit(t, 200, 0, 3) is None
    assert t.device("d").epoch == 200 and t.device("d").epochs_seen == 2
    assert admit(t, 100, 5) is None and t.device("d").duplicates == 1  # a straggler, counted as before
    refusal = t.announce("d", 150, now_ms=NOW, limits=LIMITS)
    assert refusal is not None and refusal.reason == "epoch_regress"


def test_a_stream_first_seen_after_a_birth_takes_no_newer_epoch_than_announced() -> None:
    t = SequenceTracker()
    assert t.announce("d", 500, now_ms=NOW, limits=LIMITS) is None
    assert admit(t, 600, 0, stream="d/cam") == "unannounced_epoch"
    assert admit(t, 400, 0, stream="d/cam") is None  # older: the stream starts there and may move to 500
    assert admit(t, 500, 0, stream="d/cam") is None


def test_one_batch_far_past_the_highest_sequence_number_is_refused_two_are_believed() -> None:
    t = SequenceTracker()
    assert admit(t, 1, 0, 10) is None
    assert admit(t, 1, 10 + 1_000, 5) is None  # a gap within the limit is a loss, counted
    assert admit(t, 1, 10**12, 5) == "seq_jump"
    assert t.device("d").missing == 1_000
    assert admit(t, 1, 10**12 + 5, 5) is None  # the device really is out there (a long outage)
    assert t.device("d").highest == 10**12 + 9


def test_restored_accounting_with_impossible_epochs_is_forgotten() -> None:
    t = SequenceTracker.from_states({"a": DeviceSequence(epoch=2**63 - 1, ranges=[[0, 1]], received=1),
                                     "b": DeviceSequence(epoch=NOW - 1, ranges=[[0, 4]], received=4)})
    t.restore_announced({"a": 2**63 - 1, "b": NOW - 1})
    assert sorted(t.discard_implausible(now_ms=NOW, limits=LIMITS)) == ["a", "birth of a"]
    assert sorted(t.devices()) == ["b"] and t.announced() == {"b": NOW - 1}


def test_two_accounts_of_one_stream_merge_into_what_either_saw() -> None:
    """The two ends of a device's move: the new owner read 0..9, the old one then committed 10..14."""
    old = DeviceSequence(7, [[0, 15]], 15, 2, 1)
    new = DeviceSequence(7, [[0, 10], [20, 25]], 15, 3, 1)
    merged = new.merged(old)
    assert (merged.ranges, merged.received, merged.missing) == ([[0, 15], [20, 25]], 20, 5)
    assert merged.duplicates == 3
    assert old.merged(new) == merged and new.ranges == [[0, 10], [20, 25]]  # neither is changed
    newer = DeviceSequence(8, [[0, 3]], 3, 0, 2)
    assert old.merged(newer) == newer == newer.merged(old)  # the newer epoch wins whole
    t = SequenceTracker()
    t.observe("gw-1", epoch=7, first_seq=0, count=10)
    t.absorb({"gw-1": old, "gw-2": old})  # gw-2 is not tracked here: left out
    assert t.device("gw-1").ranges == [[0, 15]] and set(t.devices()) == {"gw-1"}
