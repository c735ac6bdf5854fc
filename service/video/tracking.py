"""Faces followed from frame to frame, and their probabilities smoothed per track.

Boxes are linked by overlap (IoU) with where each track is predicted to be now: a constant-
velocity motion model, so a face in a pan or a zoom at 5 analysed frames a second still overlaps
its prediction when it no longer overlaps its last box. Matching is greedy, best overlap first;
with the few faces of a video that gives the optimal assignment in practice, without a solver.
A face that moved more than its box overlaps (a fast pan, a track too young to have a
velocity) is still matched when its centre moved less than `max_shift` of its size and its size
changed by less than half; such a match ranks below every overlap.
A track that finds no box is kept for `max_missing_seconds` (a blink of the detector, a hand in
front of the face), then ended; a face that comes back later starts a new track.

Smoothing is an exponential moving average of each track's probabilities with a time constant in
seconds, so it means the same at any frame rate; it never mixes two tracks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BoxTuple = tuple[float, float, float, float]
"""x, y, width, height in pixels."""

VELOCITY_MEMORY = 0.5
"""How much of a track's previous velocity its next estimate keeps: steadies the prediction
against the detector's jitter, and still follows a pan within two frames."""


def iou(a: BoxTuple, b: BoxTuple) -> float:
    """Intersection over union of two boxes; 0 when either is empty."""
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _centre_size(box: BoxTuple) -> np.ndarray:
    x, y, width, height = box
    return np.array([x + width / 2, y + height / 2, width, height], dtype=np.float64)


def _box(centre_size: np.ndarray) -> BoxTuple:
    cx, cy, width, height = (float(v) for v in centre_size)
    width, height = max(width, 1.0), max(height, 1.0)
    return (cx - width / 2, cy - height / 2, width, height)


@dataclass
class Track:
    """One face followed over time: where it was last seen and how it was moving."""

    id: int
    state: np.ndarray
    """Centre x, centre y, width, height when last seen."""
    seen_at: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    """Change of `state` per second, measured between detections."""
    measured: tuple[np.ndarray, float] | None = None
    """The last state a detector measured, and when: velocities are measured from it, so the
    boxes predicted in between (`measured=False`) never feed back into the motion model."""

    def __post_init__(self) -> None:
        if self.measured is None:
            self.measured = (self.state, self.seen_at)

    def predicted(self, time: float) -> BoxTuple:
        return _box(self.state + self.velocity * (time - self.seen_at))

    def observe(self, box: BoxTuple, time: float, measured: bool = True) -> None:
        state = _centre_size(box)
        if measured:
            assert self.measured is not None
            last_state, last_time = self.measured
            if time > last_time:
                change = (state - last_state) / (time - last_time)
                self.velocity = VELOCITY_MEMORY * self.velocity + (1 - VELOCITY_MEMORY) * change
            self.measured = (state, time)
        self.state, self.seen_at = state, time


@dataclass
class FaceTracker:
    """Gives each face box of a frame the id of the track it continues, or a new one."""

    min_iou: float = 0.2
    max_shift: float = 1.0
    """Farthest a box may move, in its own sides, to be matched without overlap."""
    max_missing_seconds: float = 1.0
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    def update(self, time: float, boxes: Sequence[BoxTuple], measured: bool = True) -> list[int]:
        """The track id of each box of the frame at `time` (seconds, increasing), in order.
        `measured`: the boxes come from the detector, not from the tracks' own predictions."""
        self.tracks = [
            track for track in self.tracks if time - track.seen_at <= self.max_missing_seconds
        ]
        pairs = sorted(
            (
                (score, t, b)
                for t, track in enumerate(self.tracks)
                for b, box in enumerate(boxes)
                if (score := self._likeness(track.predicted(time), box)) > 0
            ),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, t, b in pairs:
            if t in taken or ids[b] is not None:
                continue
            taken.add(t)
            self.tracks[t].observe(boxes[b], time, measured)
            ids[b] = self.tracks[t].id
        for b, box in enumerate(boxes):
            if ids[b] is None:
                track = Track(self._next_id, _centre_size(box), time)
                self._next_id += 1
                self.tracks.append(track)
                ids[b] = track.id
        return [track_id for track_id in ids if track_id is not None]

    def _likeness(self, predicted: BoxTuple, box: BoxTuple) -> float:
        """The overlap when it is enough; otherwise a score in (0, min_iou) that falls with the
        distance between the centres, for a box of about the same size nearby; else 0."""
        overlap = iou(predicted, box)
        if overlap >= self.min_iou:
            return overlap
        a, b = _centre_size(predicted), _centre_size(box)
        side = math.sqrt(a[2] * a[3])
        if not 2 / 3 < math.sqrt(b[2] * b[3]) / side < 3 / 2:
            return 0.0
        shift = math.hypot(a[0] - b[0], a[1] - b[1]) / (self.max_shift * side)
        return self.min_iou * (1 - shift) if shift < 1 else 0.0


@dataclass
class ProbabilitySmoother:
    """Each track's probabilities averaged over the last `time_constant` seconds or so.

    The weight of the past is exp(-elapsed / time_constant): a frame 1 time constant old counts
    37 %, 3 of them old 5 %. 0 gives the raw probabilities. A track's state is dropped with the
    track (`forget`)."""

    time_constant: float
    _state: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)

    def smooth(self, track: int, time: float, probabilities: np.ndarray) -> np.ndarray:
        raw = np.asarray(probabilities, dtype=np.float64)
        previous = self._state.get(track)
        if previous is None or self.time_constant <= 0:
            smoothed = raw
        else:
            past, past_time = previous
            keep = math.exp(-max(0.0, time - past_time) / self.time_constant)
            smoothed = keep * past + (1 - keep) * raw
        self._state[track] = (smoothed, time)
        return smoothed

    def forget(self, live_tracks: Sequence[int]) -> None:
        """Drop the state of tracks that ended, so a long video's memory does not grow."""
        live = set(live_tracks)
        for track in [track for track in self._state if track not in live]:
            del self._state[track]
