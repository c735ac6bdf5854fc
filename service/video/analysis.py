"""Frames -> tracked, smoothed faces, through the one image pipeline.

`FaceFollower` turns the pipeline's answer for one frame into faces with track ids and smoothed
probabilities, and keeps each track's running totals for the summary; the video endpoint, the
live stream and the command for local files all use it. `analyse_frames` is the step the
endpoint runs in a worker thread: a few frames decoded, through one inference call, followed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from service.faces import FaceBox
from service.images import DecodedImage
from service.pipeline import PROBABILITY_DECIMALS, EmotionPipeline
from service.schemas import Box, DetectMode, EmotionProbabilities, Prediction
from service.video.decode import SampledFrame
from service.video.schemas import AnalysedFrame, TrackedFace, TrackSummary
from service.video.tracking import FaceTracker, ProbabilitySmoother

FRAMES_PER_STEP = 4
"""Frames analysed per worker-thread step: few enough that the first NDJSON line is not held back
and other requests get their turn in between."""

DETECTION_INTERVAL = 0.1
"""Seconds of video between two face detections (`detect=always`). Detection is ~3/4 of a
frame's CPU time (docs/experiments.md, 2026-12-07); in between, the faces are cut at the boxes
their tracks predict. At the default 5 frames a second every frame is detected; analysing every
frame of a 30 frames/s video, one in three is, and a face that enters is found within 0.1 s."""


@dataclass
class _TrackTotals:
    first: float
    last: float
    frames: int
    probability_sum: np.ndarray


@dataclass
class FaceFollower:
    """Tracks and smoothing for one video or stream, in the model's label order."""

    labels: tuple[str, ...]
    smoothing: float
    tracker: FaceTracker = field(default_factory=FaceTracker)
    totals: dict[int, _TrackTotals] = field(default_factory=dict)
    detection_interval: float = DETECTION_INTERVAL
    last_detection: float | None = None
    last_time: float | None = None

    def __post_init__(self) -> None:
        self.smoother = ProbabilitySmoother(self.smoothing)

    def follow(
        self, time: float, prediction: Prediction, detected: bool = True
    ) -> list[TrackedFace]:
        """The frame's faces with their tracks; `detected`: the boxes are the detector's, not
        the ones `known_boxes` predicted."""
        faces = prediction.faces
        boxes = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in faces]
        ids = self.tracker.update(time, boxes, measured=detected)
        tracked = []
        for face, track in zip(faces, ids, strict=True):
            raw = np.array([getattr(face.probabilities, label) for label in self.labels])
            smoothed = self.smoother.smooth(track, time, raw)
            self._count(track, time, raw)
            tracked.append(self._face(track, face.box, smoothed))
        self.smoother.forget([track.id for track in self.tracker.tracks])
        self.last_time = time
        return tracked

    def known_boxes(self, time: float, size: tuple[int, int]) -> list[FaceBox] | None:
        """Where the faces seen in the previous frame are now, largest first, when the last
        detection is recent enough to trust that no other face came in; None: detect."""
        recent = (
            self.last_detection is not None
            and time - self.last_detection < self.detection_interval - 1e-6
        )
        seen = [track for track in self.tracker.tracks if track.seen_at == self.last_time]
        if not recent or not seen:
            return None
        boxes = [_clipped(track.predicted(time), size) for track in seen]
        if any(box is None for box in boxes):
            return None  # a face reaching the edge: let the detector say where it is
        return sorted((box for box in boxes if box is not None), key=lambda b: -b.area)

    def _count(self, track: int, time: float, raw: np.ndarray) -> None:
        totals = self.totals.get(track)
        if totals is None:
            self.totals[track] = _TrackTotals(time, time, 1, raw.copy())
        else:
            totals.last, totals.frames = time, totals.frames + 1
            totals.probability_sum += raw

    def _face(self, track: int, box: Box, probabilities: np.ndarray) -> TrackedFace:
        best = int(np.argmax(probabilities))
        values = self._rounded(probabilities)
        return TrackedFace(
            track=track,
            box=box,
            emotion=self.labels[best],
            confidence=values[self.labels[best]],
            probabilities=EmotionProbabilities(**values),
        )

    def _rounded(self, probabilities: np.ndarray) -> dict[str, float]:
        return {
            label: round(float(p), PROBABILITY_DECIMALS)
            for label, p in zip(self.labels, probabilities, strict=True)
        }

    def summary(self) -> list[TrackSummary]:
        """Per track, in order of appearance: when it was seen, how often, its mean raw
        probabilities and their most probable emotion."""
        summaries = []
        for track, totals in sorted(self.totals.items()):
            mean = totals.probability_sum / totals.frames
            summaries.append(
                TrackSummary(
                    track=track,
                    first=totals.first,
                    last=totals.last,
                    frames=totals.frames,
                    emotion=self.labels[int(np.argmax(mean))],
                    probabilities=EmotionProbabilities(**self._rounded(mean)),
                )
            )
        return summaries


def _clipped(box: tuple[float, float, float, float], size: tuple[int, int]) -> FaceBox | None:
    x, y, width, height = box
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(size[0], round(x + width)), min(size[1], round(y + height))
    if right - left < 0.8 * width or bottom - top < 0.8 * height:
        return None
    return FaceBox(left, top, right - left, bottom - top)


def analyse_frames(
    pipeline: EmotionPipeline,
    follower: FaceFollower,
    frames: Iterator[SampledFrame],
    size: tuple[int, int],
    detect: DetectMode,
    max_faces: int,
    count: int = FRAMES_PER_STEP,
) -> list[AnalysedFrame]:
    """The next `count` frames of `frames` (fewer at the end; none when it is exhausted),
    analysed and followed. `size` is the video's (width, height): boxes are answered in it."""
    batch = [frame for _, frame in zip(range(count), frames, strict=False)]
    width, height = size
    analysed = []
    for frame in batch:
        image = DecodedImage(_gray(frame.pixels), width, height)
        known = follower.known_boxes(frame.time, size) if detect is DetectMode.always else None
        if known is None:
            (prediction,) = pipeline.predict_decoded([image], detect, max_faces)
            follower.last_detection = frame.time
        else:
            prediction = pipeline.predict_at(image, known[:max_faces])
        faces = follower.follow(frame.time, prediction, detected=known is None)
        analysed.append(AnalysedFrame(time=frame.time, faces=faces))
    return analysed


def _gray(pixels: np.ndarray) -> np.ndarray:
    """The pipeline finds and crops faces in gray; a reader asked for colour gives BGR."""
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY) if pixels.ndim == 3 else pixels
