"""Frames through the real pipeline and tracker in-process: where detection runs and where the
tracks' predicted boxes stand in for it."""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from harness.videos import pan, write_video
from service.app import load_detector
from service.faces import FaceBox
from service.images import ImageLimits
from service.memory_budget import MemoryBudget
from service.model import EmotionModel
from service.pipeline import EmotionPipeline
from service.schemas import DetectMode
from service.settings import Settings
from service.video.analysis import DETECTION_INTERVAL, FaceFollower, analyse_frames
from service.video.decode import DECODER_FRAMES, VideoLimits, VideoReader


@dataclass
class CountingDetector:
    """The real detector, its calls counted."""

    detector: object
    calls: list[int] = field(default_factory=list)

    def __getattr__(self, name: str) -> object:
        return getattr(self.detector, name)

    def detect(self, gray: np.ndarray, max_faces: int | None = None) -> list[FaceBox]:
        self.calls.append(1)
        return self.detector.detect(gray, max_faces)


def analyse(model_path: Path, clip: Path, fps: float) -> tuple[list, int]:
    detector = CountingDetector(load_detector(Settings()))
    model = EmotionModel.load(model_path)
    pipeline = EmotionPipeline(model, detector, ImageLimits(10**8, 10**8, 20))  # type: ignore[arg-type]
    follower = FaceFollower(model.labels, smoothing=0.5)
    with (
        clip.open("rb") as file,
        VideoReader(file, VideoLimits(60, 1000, 10**7), fps=fps) as reader,
    ):
        frames = reader.frames()
        analysed = []
        while step := analyse_frames(pipeline, follower, frames, (320, 240), DetectMode.always, 5):
            analysed += step
    return analysed, len(detector.calls)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "pan30.mkv", pan, count=45, rate=30)


def test_between_detections_the_tracks_predicted_boxes_are_classified(model_path, clip):
    analysed, detections = analyse(model_path, clip, fps=30)
    assert len(analysed) == 45
    # One detection per DETECTION_INTERVAL of video: every third frame at 30 frames a second.
    assert detections == math.ceil(45 / round(DETECTION_INTERVAL * 30))
    # The face (largest in every frame) is one track; a stray detection may add a short one.
    assert [frame.faces[0].track for frame in analysed] == [1] * 45
    assert sum(len(frame.faces) > 1 for frame in analysed) <= 3
    centres = [frame.faces[0].box.x + frame.faces[0].box.width / 2 for frame in analysed]
    steps = np.diff(centres)
    # The pan moves ~3.2 pixels a frame; the predicted boxes follow it between detections.
    assert np.all(steps > -2) and 2 < np.mean(steps) < 4.5


def test_at_five_frames_a_second_every_frame_is_detected(model_path, clip):
    analysed, detections = analyse(model_path, clip, fps=5)
    assert len(analysed) == detections == 8


def test_an_open_video_holds_its_decoder_memory_until_closed_or_dropped(tmp_path):
    """A streamed answer closes its reader when it ends; one that never starts (a client gone
    before the first line) drops it, and the reservation must come back then too."""
    clip = write_video(tmp_path / "pan.mkv", pan, count=5)
    memory = MemoryBudget(1 << 30, wait_seconds=0.0)
    limits = VideoLimits(max_seconds=60, max_frames=100, max_pixels=10**7, memory=memory)
    with clip.open("rb") as file:
        reader = VideoReader(file, limits, fps=5)
        held = memory.reserved_bytes
        assert held >= DECODER_FRAMES * reader.info.width * reader.info.height
        reader.close()
        assert memory.reserved_bytes == 0
        dropped = VideoReader(file, limits, fps=5)
        assert memory.reserved_bytes == held
        del dropped
        gc.collect()
        assert memory.reserved_bytes == 0
