"""Test videos made from the public-domain portrait with OpenCV's `VideoWriter`: a pan, a zoom,
a face that leaves and comes back, two faces. Small and short, so the tests stay fast."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from harness.photos import PORTRAIT_FILE as PORTRAIT

SIZE = (320, 240)
RATE = 10
FOURCC = {"mp4": "mp4v", "mov": "mp4v", "webm": "VP80", "avi": "MJPG", "mkv": "MJPG"}
"""A codec each container takes that this OpenCV build can write."""

Scene = Callable[[int, int], np.ndarray]
"""(frame index, frame count) -> a BGR frame of SIZE."""


def portrait_at(side: int) -> np.ndarray:
    image = cv2.imread(str(PORTRAIT))
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def place(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    """`image` pasted with its top-left at (x, y), clipped to the canvas."""
    height, width = canvas.shape[:2]
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + image.shape[1], width), min(y + image.shape[0], height)
    if right > left and bottom > top:
        canvas[top:bottom, left:right] = image[top - y : bottom - y, left - x : right - x]
    return canvas


def _canvas(size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.full((size[1], size[0], 3), 190, np.uint8)


def pan(index: int, count: int) -> np.ndarray:
    """The portrait sliding from left to right."""
    return place(_canvas(), portrait_at(200), int(-20 + 140 * index / max(count - 1, 1)), 20)


def zoom(index: int, count: int) -> np.ndarray:
    """The portrait growing from 140 to 240 pixels about the frame's centre."""
    side = int(140 + 100 * index / max(count - 1, 1))
    return place(_canvas(), portrait_at(side), 160 - side // 2, 120 - side // 2)


def leaves_and_returns(index: int, count: int) -> np.ndarray:
    """Still for the first third, gone (a blank frame) for the middle third, back for the last."""
    if count // 3 <= index < 2 * count // 3:
        return _canvas()
    return place(_canvas(), portrait_at(200), 60, 20)


def two_faces(index: int, count: int) -> np.ndarray:
    """Two portraits side by side, drifting towards each other a little."""
    shift = int(20 * index / max(count - 1, 1))
    canvas = _canvas((480, 240))
    place(canvas, portrait_at(220), shift, 10)
    return place(canvas, portrait_at(220), 260 - shift, 10)


def frames(scene: Scene, count: int) -> Iterator[np.ndarray]:
    for index in range(count):
        yield scene(index, count)


def write_video(path: Path, scene: Scene, count: int = 20, rate: float = RATE) -> Path:
    """`count` frames of `scene` at `rate` frames a second, in the container `path` names."""
    first = scene(0, count)
    size = (first.shape[1], first.shape[0])
    fourcc = cv2.VideoWriter_fourcc(*FOURCC[path.suffix[1:]])
    writer = cv2.VideoWriter(str(path), fourcc, rate, size)
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} with {FOURCC[path.suffix[1:]]}"
    try:
        for frame in frames(scene, count):
            writer.write(frame)
    finally:
        writer.release()
    return path
