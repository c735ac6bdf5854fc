"""Grayscale image -> face boxes, with OpenCV Zoo's YuNet run by onnxruntime (FACE_DETECTOR=yunet).

YuNet is a face detector of 75k parameters made to run at the image's own size. On the 640x480
frames of the detection bench it finds more faces than BlazeFace at every size from 48 pixels up
and costs less CPU (docs/experiments.md, "YuNet"). It sees the detection copy (the image shrunk
to DETECTION_MAX_SIDE) whole, padded to its stride; a copy smaller than `MIN_INPUT_SIDE` is
enlarged to it, so that a tight crop of one face still gives the network some context, and one
larger than `TILE_SPAN` is also run in tiles, which bounds the memory of one run.

Its outputs are decoded as OpenCV's `FaceDetectorYN` does (per stride: a grid of cells, the
score sqrt(class x objectness), centre offsets in cells and log sides), then overlapping boxes
are suppressed and each box is corrected to frame the face as a Haar box does, so the emotion
contract's `crop_margin` (measured on Haar boxes) still holds. The pipeline works on grayscale,
and the shipped file takes one gray channel (`training.yunet` folded its colour channels into
one). Everything model-specific comes from the file's metadata
(`contract.detector.YuNetMetadata`).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from contract.detector import YuNetMetadata
from service.faces import DetectorError, FaceBox, shrink, tile_span
from service.network_detector import NetworkDetector

TILE_SPAN = 1280
"""Most pixels of the detection copy one run sees: onnxruntime's activations grow with the input
(peak memory of one run: 18 MB at 640x480, 137 MB at 1920x1440, 609 MB at 4096x3072), so a
copy larger than this (DETECTION_MAX_SIDE above it) is run whole shrunk to this, for its large
faces, and in overlapping tiles of this size at full resolution, for its small ones (4096x3072:
263 MB; a 1080p photo at 1920 takes 91 ms of CPU this way, 57 in one run)."""
MIN_INPUT_SIDE = 160
"""Smallest longest side the network is run at: a 48x48 upload of one face is enlarged to it.
Measured on 600 FER2013 train crops: one face found in 453 run at 48 pixels, 573 at 96, 582 at
160, 586 at 240."""
HOW_TO_GET_YUNET = (
    "build it with `python -m training.yunet` (training environment), or set "
    "FACE_DETECTOR=blazeface or haar"
)


class YuNetDetector(NetworkDetector[YuNetMetadata]):
    """YuNet, run at the size of the detection copy (see the module's docstring)."""

    metadata_type = YuNetMetadata
    how_to_get = HOW_TO_GET_YUNET

    def _check_network(self, path: Path) -> None:
        self._stride = max(self.metadata.strides)
        self._outputs = [
            f"{kind}_{stride}"
            for stride in self.metadata.strides
            for kind in ("cls", "obj", "bbox")
        ]
        missing = set(self._outputs) - {output.name for output in self._session.get_outputs()}
        if missing:
            raise DetectorError(f"{path} lacks the outputs {sorted(missing)}; {HOW_TO_GET_YUNET}")
        (image,) = self._session.get_inputs()
        if image.shape[1] != 1:
            raise DetectorError(
                f"{path} takes {image.shape[1]} channels, not one gray channel (a file built "
                f"before the channel fold); {HOW_TO_GET_YUNET}"
            )

    def detect(self, gray: np.ndarray, max_faces: int | None = None) -> list[FaceBox]:
        """The faces in `gray` (at most `max_faces` when given), largest first (ties: top to
        bottom, then left); square boxes, in pixels of `gray`."""
        height, width = gray.shape
        shrunk = min(1.0, self.max_side / max(height, width))
        whole = min(shrunk, TILE_SPAN / max(height, width))
        found = [self._candidates(gray, max(whole, MIN_INPUT_SIDE / max(height, width)))]
        found += self._tile_candidates(gray, shrunk)
        corners = np.concatenate([boxes for boxes, _ in found])
        if not len(corners):
            return []
        scores = np.concatenate([scores for _, scores in found])
        xywh = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
        kept = cv2.dnn.NMSBoxes(
            xywh.tolist(), scores.tolist(), self.metadata.min_score, self.metadata.nms_iou
        )
        kept_corners = corners[np.asarray(kept, dtype=int).reshape(-1)]
        return self._faces(kept_corners, (height, width), max_faces)

    def _tile_candidates(
        self, gray: np.ndarray, shrunk: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The network on overlapping tiles of the detection copy (`gray` scaled by `shrunk`),
        at most TILE_SPAN pixels each, when the copy is larger than that; none otherwise, as
        with the default 640 pixels."""
        height, width = gray.shape
        columns = math.ceil(width * shrunk / TILE_SPAN)
        rows = math.ceil(height * shrunk / TILE_SPAN)
        if columns * rows <= 1:
            return []
        found = []
        for row in range(rows):
            top, bottom = tile_span(row, rows, height)
            for column in range(columns):
                left, right = tile_span(column, columns, width)
                corners, scores = self._candidates(gray[top:bottom, left:right], shrunk)
                found.append((corners + np.array([left, top, left, top], np.float32), scores))
        return found

    def _candidates(self, gray: np.ndarray, fit: float) -> tuple[np.ndarray, np.ndarray]:
        """The network run on `gray` scaled by `fit`, padded on the right and bottom to its
        stride: boxes scoring at least `min_score`, (N, 4) left, top, right, bottom in pixels
        of `gray`, and their scores."""
        height, width = gray.shape
        size = (max(1, round(width * fit)), max(1, round(height * fit)))
        if fit < 1:
            scaled = shrink(gray, size)
        elif fit > 1:
            scaled = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR)
        else:
            scaled = gray
        input_height, input_width = (
            self._stride * math.ceil(side / self._stride) for side in scaled.shape
        )
        tensor = np.zeros((1, 1, input_height, input_width), np.float32)
        tensor[0, 0, : scaled.shape[0], : scaled.shape[1]] = scaled
        with self._runs:
            outputs = self._session.run(self._outputs, {"input": tensor})
        corners, scores = [], []
        for index, stride in enumerate(self.metadata.strides):
            cls, obj, bbox = outputs[3 * index : 3 * index + 3]
            score = np.sqrt(np.clip(cls[0, :, 0], 0, 1) * np.clip(obj[0, :, 0], 0, 1))
            cells = np.flatnonzero(score >= self.metadata.min_score)
            rows, columns = np.divmod(cells, input_width // stride)
            offsets = bbox[0, cells]
            centre_x = (columns + offsets[:, 0]) * stride
            centre_y = (rows + offsets[:, 1]) * stride
            # Log sides clipped so that no input can make a side overflow (e^12 cells is far
            # larger than any image; boxes are clipped to the image afterwards).
            half_width, half_height = (
                np.exp(np.clip(offsets[:, axis], -12, 12)) * stride / 2 for axis in (2, 3)
            )
            corners.append(
                np.stack(
                    [
                        centre_x - half_width,
                        centre_y - half_height,
                        centre_x + half_width,
                        centre_y + half_height,
                    ],
                    axis=1,
                )
            )
            scores.append(score[cells])
        return np.concatenate(corners) / fit, np.concatenate(scores)
