"""Grayscale image -> face boxes, with MediaPipe's BlazeFace run by onnxruntime.

The Haar cascade costs ~190 ms of CPU on a 640x480 photo here; BlazeFace, a small SSD-style
CNN, finds faces in a few milliseconds. The image is letterboxed (scaled to fit, centred on
black) into the network's square input; its raw outputs are decoded as MediaPipe's graph does
(SSD anchors from `SsdAnchorsCalculator`'s options, sigmoid scores, weighted non-maximum
suppression), and the boxes mapped back to the image's pixels, then corrected to frame the face
as a Haar box does, so the emotion contract's `crop_margin` (measured on Haar boxes) still
holds. Everything model-specific comes from the file's metadata (`contract.detector`).

The pipeline works on grayscale; the network wants RGB. The gray image is given on all three
channels, so an upload is decoded once, and in gray. On the colour portrait in tests/data the best
box moves by under 0.4 % of its side and its score from 0.91 to 0.89; the recall figures in
bench/results/detection_tradeoff.md are FER2013's gray faces.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2
import numpy as np

from contract.detector import AnchorOptions, DetectorMetadata, DetectorMetadataError
from service.faces import DetectorError, FaceBox, shrink, tile_span
from service.network_detector import NetworkDetector

STRIDE = 32
"""The network's coarsest stride: its input sides must be multiples of this."""
TILE_SPAN = 640
"""Pixels of the detection copy one view covers: the first (largest) input sees them shrunk 2x,
the most that still finds the 48-pixel faces MIN_FACE_PIXELS admits there (24 px at 640)."""


HOW_TO_GET_A_DETECTOR = (
    "build it with `python -m training.face_detector` (training environment), or set "
    "FACE_DETECTOR=haar"
)


@functools.cache
def ssd_anchors(options: AnchorOptions, height: int, width: int) -> np.ndarray:
    """Anchor centres, (N, 2) x and y in pixels of a `height` x `width` input, in the order of
    the network's outputs: MediaPipe's `SsdAnchorsCalculator` for fixed-size anchors
    (consecutive layers of the same stride share one grid; each layer adds an anchor per aspect
    ratio, and one more for the interpolated scale when that ratio is positive)."""
    if not options.fixed_anchor_size:
        raise DetectorMetadataError("only fixed-size anchors (BlazeFace's) are supported")
    centres = []
    layer = 0
    while layer < options.num_layers:
        stride = options.strides[layer]
        per_cell = 0
        while layer < options.num_layers and options.strides[layer] == stride:
            per_cell += len(options.aspect_ratios)
            per_cell += options.interpolated_scale_aspect_ratio > 0
            layer += 1
        rows, columns = math.ceil(height / stride), math.ceil(width / stride)
        y, x = np.mgrid[0:rows, 0:columns]
        grid = np.stack(
            [
                (x + options.anchor_offset_x) / columns * width,
                (y + options.anchor_offset_y) / rows * height,
            ],
            -1,
        ).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: the best box and every box overlapping it
    by more than `iou` become one box, their score-weighted average; repeat on the rest.
    `boxes` are (N, 4) left, top, right, bottom."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    merged = []
    remaining = np.arange(len(boxes))
    while remaining.size:
        best = boxes[remaining[0]]
        others = boxes[remaining]
        width = np.clip(
            np.minimum(best[2], others[:, 2]) - np.maximum(best[0], others[:, 0]), 0, None
        )
        height = np.clip(
            np.minimum(best[3], others[:, 3]) - np.maximum(best[1], others[:, 1]), 0, None
        )
        overlap = width * height
        areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
        best_area = (best[2] - best[0]) * (best[3] - best[1])
        together = overlap / np.maximum(areas + best_area - overlap, 1e-9) > iou
        together[0] = True
        weights = scores[remaining[together]]
        merged.append((others[together] * weights[:, None]).sum(0) / weights.sum())
        remaining = remaining[~together]
    return merged


class BlazeFaceDetector(NetworkDetector[DetectorMetadata]):
    """BlazeFace, run at its own square input sizes on the image letterboxed into them; the
    detection copy larger than one view is also run in tiles (`TILE_SPAN`)."""

    metadata_type = DetectorMetadata
    how_to_get = HOW_TO_GET_A_DETECTOR

    def _check_network(self, path: Path) -> None:
        anchors = self.metadata.anchors
        for size in self.metadata.input_sizes:
            blank = self._tensor(np.zeros((size, size), np.uint8))
            boxes, scores = self._session.run(["boxes", "scores"], {"image": blank})
            count = len(ssd_anchors(anchors, size, size))
            if boxes.shape != (1, count, 16) or scores.shape != (1, count, 1):
                raise DetectorError(
                    f"{path} answers boxes {boxes.shape} and scores {scores.shape} at "
                    f"{size} px, not one per anchor ({count}); {HOW_TO_GET_A_DETECTOR}"
                )
        min_score = self.metadata.min_score
        self._min_logit = math.log(min_score / (1 - min_score))

    def detect(self, gray: np.ndarray, max_faces: int | None = None) -> list[FaceBox]:
        """The faces in `gray` (at most `max_faces` when given), largest first (ties: top to
        bottom, then left); square boxes, in pixels of `gray`."""
        height, width = gray.shape
        found = [self._candidates(gray, size) for size in self.pass_sizes(height, width)]
        found += self._tile_candidates(gray)
        corners = np.concatenate([boxes for boxes, _ in found])
        if not len(corners):
            return []
        scores = np.concatenate([scores for _, scores in found])
        merged = weighted_nms(corners, scores, self.metadata.nms_iou)
        return self._faces(merged, (height, width), max_faces)

    def pass_sizes(self, height: int, width: int) -> list[int]:
        """The input sizes the whole image is run at, largest first: the largest is sized to the
        image, the others run only below it.

        The largest input looks at the detection copy (the image shrunk to `max_side`) shrunk 2x
        at most, as a tile does (`TILE_SPAN`): on a 640-pixel copy that is the full 320, but a
        256-pixel portrait needs only 128 to be seen as closely, where 320 would enlarge it
        (2.5x the work of 128 x 128, for faces the network sees no better). A smaller input adds
        faces too large for the larger one, so it runs only where it is smaller."""
        sizes = self.metadata.input_sizes
        largest, smallest = max(sizes), min(sizes)
        copy_side = min(max(height, width), self.max_side)
        needed = STRIDE * math.ceil(copy_side * largest / TILE_SPAN / STRIDE)
        first = max(smallest, min(largest, needed))
        return [first, *sorted((size for size in sizes if size < first), reverse=True)]

    def _tile_candidates(self, gray: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The first input size run on overlapping tiles, when the detection copy (`gray`
        shrunk to `max_side`) is larger than one view covers; none otherwise, as with the default
        640 pixels.

        One whole-image pass shrinks a large photo so far that its small faces vanish: a
        1920x1080 photo is seen at 320 pixels, a 96-pixel face at 16. Raising DETECTION_MAX_SIDE
        asks for those faces, at the cost of one more run per tile (e.g. 1920: 3x2 tiles)."""
        height, width = gray.shape
        scale = min(1.0, self.max_side / max(height, width))
        columns = math.ceil(width * scale / TILE_SPAN)
        rows = math.ceil(height * scale / TILE_SPAN)
        if columns * rows <= 1:
            return []
        size = self.metadata.input_sizes[0]
        found = []
        for row in range(rows):
            top, bottom = tile_span(row, rows, height)
            for column in range(columns):
                left, right = tile_span(column, columns, width)
                corners, scores = self._candidates(gray[top:bottom, left:right], size)
                offset = np.array([left, top, left, top], np.float32)
                found.append((corners + offset, scores))
        return found

    def _candidates(self, gray: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The network run on `gray` scaled to fit `size` x `size`: boxes scoring at least
        `min_score`, (N, 4) left, top, right, bottom in pixels of `gray`, and their scores.

        The input is the scaled image centred on black, cut to the next multiple of 32 on each
        side (the network's stride): a 4:3 photo is run at 320x256, not 320x320, and a 16:9
        one at 320x192, which saves a fifth and two fifths of the work."""
        height, width = gray.shape
        fit = size / max(height, width)
        inner = (max(1, round(width * fit)), max(1, round(height * fit)))
        if fit < 1:
            resized = shrink(gray, inner)
        else:
            resized = cv2.resize(gray, inner, interpolation=cv2.INTER_LINEAR)
        input_width, input_height = (STRIDE * math.ceil(side / STRIDE) for side in inner)
        left, top = (input_width - inner[0]) // 2, (input_height - inner[1]) // 2
        padded = np.zeros((input_height, input_width), np.uint8)
        padded[top : top + inner[1], left : left + inner[0]] = resized

        with self._runs:
            raw_boxes, raw_scores = self._session.run(
                ["boxes", "scores"], {"image": self._tensor(padded)}
            )
        clip = self.metadata.score_clip
        logits = np.clip(raw_scores[0, :, 0], -clip, clip)
        found = logits >= self._min_logit  # sigmoid(logit) >= min_score, without overflow
        anchors = ssd_anchors(self.metadata.anchors, input_height, input_width)
        raw = raw_boxes[0, found, :4]
        centres = raw[:, :2] + anchors[found]  # pixels of the input
        halves = raw[:, 2:4] / 2
        corners = np.concatenate([centres - halves, centres + halves], axis=1)
        corners = (corners - [left, top, left, top]) / fit  # pixels of `gray`
        return corners, 1 / (1 + np.exp(-logits[found]))

    @staticmethod
    def _tensor(letterbox: np.ndarray) -> np.ndarray:
        """The network's input: [1, size, size, 3] float32 in [-1, 1], gray on every channel;
        one table look-up per pixel makes all three channels at once."""
        return _GRAY_TO_INPUT[letterbox][None]


_GRAY_TO_INPUT = np.repeat((np.arange(256, dtype=np.float32) * (1 / 127.5) - 1)[:, None], 3, axis=1)
"""Each gray level's value on the network's three input channels."""
