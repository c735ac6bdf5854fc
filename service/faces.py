"""Face boxes -> square crops of the contract's size (OpenCV), and what a face detector is.

The detectors themselves (FACE_DETECTOR: `service.yunet`, the default, `service.blazeface` and
`service.haar`)
find faces on a shrunk copy of the image (speed depends on that copy, not on the upload) and map
the boxes back to full resolution. A crop is the square around a box's centre, scaled by the
contract's `crop_margin`; where it runs past the image edge the edge pixels are repeated. Crops
are taken from the full-resolution image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np


@dataclass(frozen=True)
class FaceBox:
    """A rectangle in pixels of the upright image; `x`, `y` is its top-left corner."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height

    def rescaled(self, shape: tuple[int, int], to_shape: tuple[int, int]) -> FaceBox:
        """This box, measured on an image of `shape` (height, width), in pixels of the same
        image at `to_shape`; clipped to it."""
        return box_in(
            (self.x, self.y, self.width, self.height),
            to_shape[1] / shape[1],
            to_shape[0] / shape[0],
            to_shape,
        )


class DetectorError(RuntimeError):
    """A face detector's file cannot be used; the message says why and what to do."""


class FaceDetector(Protocol):
    """What the pipeline needs of a face detector (`service.yunet`, `service.blazeface`,
    `service.haar`).

    `max_side` and `min_face_pixels` are the settings of the same names: a face is reported when
    its side is at least `min_face_pixels` on a copy of the image shrunk to `max_side` pixels
    (the pipeline decodes large JPEGs just large enough for that)."""

    max_side: int
    min_face_pixels: int

    def detect(self, gray: np.ndarray, max_faces: int | None = None) -> list[FaceBox]:
        """The faces in `gray` (at most `max_faces` when given), largest first (ties: top to
        bottom, then left), in pixels of `gray`."""
        ...


def shrink(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`gray` made smaller, to `size` (width, height), by averaging.

    OpenCV's INTER_AREA is quick for whole factors and slow otherwise (a 12-megapixel photo to
    640 pixels: 21 ms of CPU here): so halve first, a 2x2 average on its quick path, while the
    image is still twice the size or more, then let one INTER_AREA step do the rest; the same
    average, in an eighth of the time. An odd last row or column is dropped before a halving."""
    width, height = size
    while gray.shape[1] >= 2 * width and gray.shape[0] >= 2 * height:
        even = gray[: gray.shape[0] // 2 * 2, : gray.shape[1] // 2 * 2]
        gray = cv2.resize(
            even, (even.shape[1] // 2, even.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def box_in(
    box: Sequence[float], factor_x: float, factor_y: float, shape: tuple[int, int]
) -> FaceBox:
    """`box` (x, y, width, height) scaled by the factors and clipped to an image of `shape`."""
    x, y, w, h = box
    height, width = shape
    left, top = max(0, round(x * factor_x)), max(0, round(y * factor_y))
    right, bottom = min(width, round((x + w) * factor_x)), min(height, round((y + h) * factor_y))
    return FaceBox(left, top, right - left, bottom - top)


def crop_face(gray: np.ndarray, box: FaceBox, *, margin: float, size: int) -> np.ndarray:
    """The square around `box`'s centre, its side `margin` times the box's longer side."""
    side = max(1, round(max(box.width, box.height) * margin))
    centre_x = box.x + box.width / 2
    centre_y = box.y + box.height / 2
    return crop_square(gray, centre_x, centre_y, side, size)


def crop_whole_image(gray: np.ndarray, *, size: int) -> np.ndarray:
    """The whole image as one face: centred in a square of its longer side, without distortion."""
    height, width = gray.shape
    return crop_square(gray, width / 2, height / 2, max(width, height), size)


def crop_square(
    gray: np.ndarray, centre_x: float, centre_y: float, side: int, size: int
) -> np.ndarray:
    """A `size` x `size` picture of the square `side` wide centred at (`centre_x`, `centre_y`).

    The part inside the image is resized first and the rest is padded afterwards by repeating
    edge pixels, so a huge square (the whole of a long panorama) never exists at full size.
    """
    height, width = gray.shape
    left = math.floor(centre_x - side / 2)
    top = math.floor(centre_y - side / 2)
    inside_left, inside_top = max(0, left), max(0, top)
    inside_right, inside_bottom = min(width, left + side), min(height, top + side)
    if inside_right <= inside_left or inside_bottom <= inside_top:
        raise ValueError(f"square at ({centre_x}, {centre_y}) side {side} misses the image")
    inside = gray[inside_top:inside_bottom, inside_left:inside_right]

    scale = size / side
    pad_left = min(size - 1, round((inside_left - left) * scale))
    pad_top = min(size - 1, round((inside_top - top) * scale))
    inside_width = max(1, min(size - pad_left, round(inside.shape[1] * scale)))
    inside_height = max(1, min(size - pad_top, round(inside.shape[0] * scale)))
    shrinking = inside_width < inside.shape[1] or inside_height < inside.shape[0]
    resized = cv2.resize(
        inside,
        (inside_width, inside_height),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    return cv2.copyMakeBorder(
        resized,
        pad_top,
        size - pad_top - inside_height,
        pad_left,
        size - pad_left - inside_width,
        cv2.BORDER_REPLICATE,
    )


TILE_OVERLAP = 0.25
"""How far tiles reach into their neighbours, as a share of a tile: a face cut by one tile's
edge is whole in the next, up to this size; larger faces are the whole-image pass's."""


def tile_span(index: int, count: int, length: int) -> tuple[int, int]:
    """Start and end, in pixels, of tile `index` of `count` along a side of `length`: an equal
    share of the side, reaching TILE_OVERLAP of a share into each neighbour (the networks'
    detectors cover a large detection copy with such tiles)."""
    share = length / count
    reach = share * TILE_OVERLAP
    return max(0, round(index * share - reach)), min(length, round((index + 1) * share + reach))


def corrected_faces(
    corners: Sequence[Sequence[float]],
    correction: tuple[float, float, float],
    smallest: float,
    shape: tuple[int, int],
    max_faces: int | None,
) -> list[FaceBox]:
    """A network's boxes (left, top, right, bottom in pixels of an image of `shape`) as the
    detectors answer them: squares on the longer side, corrected by (scale, offset x, offset y)
    to frame the face as a Haar box does, at least `smallest` pixels, clipped to the image,
    largest first (ties: top to bottom, then left), at most `max_faces`."""
    scale, offset_x, offset_y = correction
    boxes = []
    for x0, y0, x1, y1 in corners:
        side = max(x1 - x0, y1 - y0)
        centre_x = (x0 + x1) / 2 + offset_x * side
        centre_y = (y0 + y1) / 2 + offset_y * side
        side = round(side * scale)
        if side < smallest:
            continue
        corner = (round(centre_x - side / 2), round(centre_y - side / 2))
        box = box_in((*corner, side, side), 1, 1, shape)
        if box.width > 0 and box.height > 0:
            boxes.append(box)
    boxes.sort(key=lambda box: (-box.area, box.y, box.x))
    return boxes if max_faces is None else boxes[:max_faces]
