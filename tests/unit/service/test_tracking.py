"""The tracker and the smoother on box sequences with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from service.video.tracking import FaceTracker, ProbabilitySmoother, iou


def test_iou_of_known_boxes() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_a_face_moving_steadily_keeps_one_track() -> None:
    tracker = FaceTracker()
    ids = {tracker.update(t / 5, [(100 + 30 * t, 50, 60, 60)])[0] for t in range(30)}
    assert ids == {1}


def test_a_fast_pan_is_followed_by_the_motion_model() -> None:
    """40 pixels a frame on a 60-pixel face: after two frames, the last box overlaps the next
    one by a fifth at most, below the matching threshold, but the prediction overlaps it fully."""
    tracker = FaceTracker(min_iou=0.3)
    ids = [tracker.update(t / 5, [(40 * t, 100, 60, 60)])[0] for t in range(20)]
    assert iou((0, 100, 60, 60), (40, 100, 60, 60)) < 0.3
    assert set(ids[1:]) == {ids[1]}
    assert len(set(ids)) <= 2


def test_a_zoom_keeps_one_track() -> None:
    tracker = FaceTracker()
    ids = {
        tracker.update(t / 5, [(200 - 5 * t, 200 - 5 * t, 50 + 10 * t, 50 + 10 * t)])[0]
        for t in range(25)
    }
    assert ids == {1}


def test_two_faces_crossing_paths_keep_their_ids() -> None:
    tracker = FaceTracker()
    for t in range(20):
        left, right = (50 + 10 * t, 100, 80, 80), (500 - 10 * t, 100, 80, 80)
        # Largest first, as the detector answers: the order of the boxes says nothing.
        boxes = [right, left] if t % 2 else [left, right]
        ids = tracker.update(t / 5, boxes)
        named = dict(zip([box[0] for box in boxes], ids, strict=True))
        assert named[left[0]] == 1 and named[right[0]] == 2


def test_a_short_gap_continues_the_track_and_a_long_one_starts_another() -> None:
    tracker = FaceTracker(max_missing_seconds=1.0)
    face = (100, 100, 80, 80)
    assert tracker.update(0.0, [face]) == [1]
    assert tracker.update(0.2, []) == []
    assert tracker.update(0.6, [face]) == [1]
    assert tracker.update(1.0, []) == []
    assert tracker.update(2.5, [face]) == [2]
    assert [track.id for track in tracker.tracks] == [2]


def test_smoothing_zero_is_raw_and_tracks_never_mix() -> None:
    happy, sad = np.eye(7)[3], np.eye(7)[5]
    raw = ProbabilitySmoother(0.0)
    raw.smooth(1, 0.0, happy)
    assert np.array_equal(raw.smooth(1, 0.2, sad), sad)

    smoother = ProbabilitySmoother(0.5)
    smoother.smooth(1, 0.0, happy)
    smoother.smooth(2, 0.0, sad)
    one = smoother.smooth(1, 0.2, sad)
    two = smoother.smooth(2, 0.2, sad)
    assert np.array_equal(two, sad)  # track 2 saw only sad: nothing of track 1's happy
    keep = np.exp(-0.2 / 0.5)
    assert one[3] == pytest.approx(keep) and one[5] == pytest.approx(1 - keep)
    assert one.sum() == pytest.approx(1.0)


def test_smoothing_weighs_time_not_frames() -> None:
    """The same second of video smooths the same at 5 and at 25 frames a second."""
    happy, sad = np.eye(7)[3], np.eye(7)[5]
    results = []
    for fps in (5, 25):
        smoother = ProbabilitySmoother(0.5)
        smoother.smooth(1, 0.0, happy)
        for frame in range(1, fps + 1):
            last = smoother.smooth(1, frame / fps, sad)
        results.append(last[3])
    assert results[0] == pytest.approx(results[1], abs=1e-9)


def test_forget_drops_ended_tracks() -> None:
    smoother = ProbabilitySmoother(0.5)
    smoother.smooth(1, 0.0, np.eye(7)[0])
    smoother.smooth(2, 0.0, np.eye(7)[1])
    smoother.forget([2])
    assert np.array_equal(smoother.smooth(1, 0.1, np.eye(7)[4]), np.eye(7)[4])


def test_predicted_boxes_never_feed_the_motion_model():
    """Boxes the tracker predicted itself (between detections) move the track, but the velocity
    is measured between detections only: a detector's jitter over one frame is not a motion."""
    tracker = FaceTracker()
    tracker.update(0.0, [(100, 100, 60, 60)])
    tracker.update(0.1, [(110, 100, 60, 60)])  # 100 pixels a second, measured
    (track,) = tracker.tracks
    velocity = track.velocity.copy()
    tracker.update(0.133, [track.predicted(0.133)], measured=False)
    assert np.array_equal(track.velocity, velocity)
    tracker.update(0.2, [(120, 100, 60, 60)])  # on course since the last detection
    # Half the last estimate (50), half the 100 pixels a second measured since 0.1 s.
    assert track.velocity[0] == pytest.approx(75)
