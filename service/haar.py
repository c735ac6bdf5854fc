"""Grayscale image -> face boxes, with OpenCV's frontal-face Haar cascade (FACE_DETECTOR=haar).

The detector this service started with: no model file, but ~190 ms of CPU for a 640x480 photo
on this project's machine (YuNet, the default, takes a few ms). Faces are searched on a copy
shrunk to `max_side`, histogram-equalised; boxes are mapped back to full resolution.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from service.faces import FaceBox, box_in, shrink

CASCADE_FILE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


class HaarDetector:
    """The Haar cascade, loaded once and shared by every request."""

    def __init__(self, *, max_side: int = 640, min_face_pixels: int = 24) -> None:
        self.max_side = max_side
        self.min_face_pixels = min_face_pixels
        self._cascade = cv2.CascadeClassifier(str(CASCADE_FILE))
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load its face cascade from {CASCADE_FILE}")
        # One classifier object is not documented as safe to call from several threads at once;
        # detectMultiScale already spreads its work over the cores, so serialising costs little.
        self._lock = threading.Lock()

    def detect(self, gray: np.ndarray, max_faces: int | None = None) -> list[FaceBox]:
        """The faces in `gray` (at most `max_faces` when given), largest first (ties: top to
        bottom, then left)."""
        height, width = gray.shape
        scale = min(1.0, self.max_side / max(height, width))
        small = gray
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = shrink(gray, size)
        small = cv2.equalizeHist(small)
        minimum = (self.min_face_pixels, self.min_face_pixels)
        with self._lock:
            found = self._cascade.detectMultiScale(
                small, scaleFactor=1.1, minNeighbors=5, minSize=minimum
            )
        boxes = [
            box_in(box, 1 / scale, 1 / scale, (height, width))
            for box in np.asarray(found).reshape(-1, 4).tolist()
        ]
        boxes.sort(key=lambda box: (-box.area, box.y, box.x))
        return boxes if max_faces is None else boxes[:max_faces]
