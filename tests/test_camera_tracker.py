"""The IoU tracker: confirmation, growing ids, ends after missed frames, best snapshot."""

from __future__ import annotations

import numpy as np
import pytest

from agents.camera.tracker import IouTracker, crop, iou
from schemas.detections import Box, Detection


def det(box: Box, confidence: float = 0.8, label: str = "person") -> Detection:
    return Detection(label, confidence, box)


def moved(box: Box, dx: float) -> Box:
    return (box[0] + dx, box[1], box[2] + dx, box[3])


BOX: Box = (0.1, 0.1, 0.3, 0.5)


def test_iou() -> None:
    assert iou(BOX, BOX) == pytest.approx(1.0)
    assert iou(BOX, (0.5, 0.5, 0.6, 0.6)) == 0.0
    assert iou((0.0, 0.0, 0.2, 0.2), (0.1, 0.0, 0.3, 0.2)) == pytest.approx(1 / 3)


def test_track_starts_after_min_hits_and_gets_an_id() -> None:
    tracker = IouTracker(min_hits=2)
    first = tracker.update([det(BOX)], 1000)
    assert first.started == () and first.detections[0].track_id is None
    second = tracker.update([det(moved(BOX, 0.02))], 1100)
    assert [t.track_id for t in second.started] == [1]
    assert second.detections[0].track_id == 1
    assert tracker.counts() == {"person": 1}


def test_one_frame_noise_never_becomes_a_track() -> None:
    tracker = IouTracker(min_hits=2, max_missed=2)
    tracker.update([det(BOX)], 0)
    update = tracker.update([], 100)
    assert update.started == () and update.ended == ()
    assert not tracker.unsettled
    assert tracker.next_id == 1


def test_track_ends_after_max_missed_frames_with_its_best_sighting() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[10:50, 10:30] = 200
    best = frame.copy()
    best[10:50, 10:30] = 250
    tracker = IouTracker(min_hits=1, max_missed=3)
    tracker.update([det(BOX, 0.6)], 1000, frame)
    tracker.update([det(BOX, 0.95)], 1100, best)
    tracker.update([det(BOX, 0.7)], 1200, frame)
    assert tracker.update([], 1300).ended == ()
    assert tracker.unsettled  # a missed track needs more frames
    assert tracker.update([], 1400).ended == ()
    ended = tracker.update([], 1500).ended
    assert len(ended) == 1
    track = ended[0]
    assert (track.track_id, track.best_confidence, track.best_ms) == (1, 0.95, 1100)
    assert (track.first_ms, track.last_ms, track.duration_ms) == (1000, 1200, 200)
    assert track.best_crop is not None and int(track.best_crop.max()) == 250
    assert tracker.tracks == [] and tracker.counts() == {}


def test_a_sighting_resets_the_miss_count() -> None:
    tracker = IouTracker(min_hits=1, max_missed=2)
    tracker.update([det(BOX)], 0)
    tracker.update([], 1)
    tracker.update([det(BOX)], 2)
    assert tracker.update([], 3).ended == ()
    assert len(tracker.update([], 4).ended) == 1


def test_ids_only_grow_and_are_not_reused() -> None:
    tracker = IouTracker(min_hits=1, max_missed=1)
    ids = []
    for i in range(3):
        ids += [t.track_id for t in tracker.update([det(BOX)], 2 * i).started]
        tracker.update([], 2 * i + 1)
    assert ids == [1, 2, 3]


def test_matching_is_per_label_and_by_overlap() -> None:
    tracker = IouTracker(min_hits=1)
    left, right = BOX, moved(BOX, 0.5)
    start = tracker.update([det(left), det(right), det(left, label="dog")], 0)
    assert sorted(t.track_id for t in start.started) == [1, 2, 3]
    ids = {(d.label, d.box[0]): d.track_id for d in start.detections}
    # The two people swap list order and move a little; each keeps its own id.
    later = tracker.update([det(moved(right, 0.01)), det(moved(left, 0.01)),
                            det(moved(left, 0.01), label="dog")], 1)
    assert later.started == () and later.ended == ()
    for d in later.detections:
        assert d.track_id == ids[(d.label, round(d.box[0] - 0.01, 6))]
    assert tracker.counts() == {"person": 2, "dog": 1}


def test_a_jump_without_overlap_is_a_new_object() -> None:
    tracker = IouTracker(min_hits=1, max_missed=1)
    tracker.update([det(BOX)], 0)
    update = tracker.update([det(moved(BOX, 0.6))], 1)
    assert [t.track_id for t in update.started] == [2]
    assert [t.track_id for t in update.ended] == [1]


def test_end_all_ends_confirmed_tracks_only() -> None:
    tracker = IouTracker(min_hits=2)
    tracker.update([det(BOX), det(moved(BOX, 0.5))], 0)
    tracker.update([det(BOX)], 1)
    assert [t.track_id for t in tracker.end_all()] == [1]
    assert tracker.tracks == []


def test_crop_is_a_copy_with_a_margin_inside_the_frame() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    part = crop(frame, (0.0, 0.0, 0.5, 0.5))
    assert part.shape == (58, 115, 3)
    part[:] = 1
    assert frame.max() == 0
