"""Face detection and cropping on the real portrait."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from harness.photos import scene
from service.faces import FaceBox, crop_face, crop_square, crop_whole_image, shrink
from service.haar import HaarDetector

# Where the portrait's one face is (measured once, by eye and by the cascade): a box around
# Eileen Collins's face, about 95 pixels wide, its centre near (224, 113).
FACE_CENTRE = (224, 113)
FACE_SIDE = 95


@pytest.fixture(scope="module")
def detector() -> HaarDetector:
    return HaarDetector(max_side=640, min_face_pixels=24)


def centre(box: FaceBox) -> tuple[float, float]:
    return box.x + box.width / 2, box.y + box.height / 2


def test_finds_the_one_face_in_the_portrait(detector, portrait_gray):
    (box,) = detector.detect(portrait_gray, max_faces=20)
    x, y = centre(box)
    assert abs(x - FACE_CENTRE[0]) < 10 and abs(y - FACE_CENTRE[1]) < 10
    assert 0.8 * FACE_SIDE < box.width < 1.2 * FACE_SIDE
    assert box.width == box.height


def test_boxes_found_on_the_shrunk_copy_are_mapped_back_to_full_size(detector, portrait_gray):
    large = cv2.resize(portrait_gray, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    box = detector.detect(large, max_faces=20)[0]  # detected at 640 px, reported at 2048
    x, y = centre(box)
    assert abs(x - 4 * FACE_CENTRE[0]) < 40 and abs(y - 4 * FACE_CENTRE[1]) < 40
    assert 0.8 * 4 * FACE_SIDE < box.width < 1.2 * 4 * FACE_SIDE


@pytest.mark.parametrize("size", [(4032, 3024), (2017, 1511), (1920, 1080)])
def test_shrinking_averages_like_inter_area(size):
    """Halving first (OpenCV's quick path) then one area step: the same picture, within a
    grey level or so of a single INTER_AREA resize, whatever the factor or odd sides."""
    gray = np.asarray(scene(*size).convert("L"))
    target = (640, round(640 * size[1] / size[0]))
    small = shrink(gray, target)
    assert small.shape == (target[1], target[0])
    direct = cv2.resize(gray, target, interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - direct.astype(int)).mean() < 1.5


def test_faces_come_largest_first_and_max_faces_keeps_the_largest(detector, two_faces):
    gray = np.asarray(Image.open(io.BytesIO(two_faces)).convert("L"))
    large, small = detector.detect(gray, max_faces=20)
    assert large.area > small.area
    assert large.x > 256 > small.x  # the full-size portrait was pasted on the right
    assert detector.detect(gray, max_faces=1) == [large]


def test_no_face_in_a_picture_without_one(detector):
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    assert detector.detect(gradient, max_faces=20) == []


def test_face_crop_is_the_box_resized_to_the_input_size(portrait_gray):
    box = FaceBox(177, 66, 95, 95)
    crop = crop_face(portrait_gray, box, margin=1.0, size=48)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    region = portrait_gray[66 : 66 + 95, 177 : 177 + 95]
    expected = cv2.resize(region, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - expected.astype(int)).max() <= 1


def test_crop_margin_widens_the_square_around_the_same_centre(portrait_gray):
    box = FaceBox(177, 66, 95, 95)
    wide = crop_face(portrait_gray, box, margin=2.0, size=48)
    side = 190
    left, top = math.floor(177 + 47.5 - side / 2), math.floor(66 + 47.5 - side / 2)
    region = portrait_gray[top : top + side, left : left + side]
    expected = cv2.resize(region, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(wide.astype(int) - expected.astype(int)).max() <= 1


def test_crop_past_the_edge_repeats_the_edge_pixels():
    gray = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100) % 251
    gray = gray.astype(np.uint8)
    crop = crop_square(gray, centre_x=0, centre_y=0, side=100, size=100)  # 3/4 outside
    assert crop.shape == (100, 100)
    assert np.array_equal(crop[50:, 50:], gray[:50, :50])
    assert np.all(crop[:50, 50:] == gray[0, :50])  # rows above the image repeat its top row
    assert np.all(crop[50:, :50] == gray[:50, :1])  # columns left of it repeat its left column


def test_whole_image_is_centred_in_a_square_without_distortion(portrait_gray):
    crop = crop_whole_image(portrait_gray, size=48)
    expected = cv2.resize(portrait_gray, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.array_equal(crop, expected)

    wide = portrait_gray[200:296, :]  # 512 x 96: the square is padded above and below
    crop = crop_whole_image(wide, size=48)
    assert crop.shape == (48, 48)
    band = cv2.resize(wide, (48, 9), interpolation=cv2.INTER_AREA)
    top = round((48 - 9) / 2)  # 19.5 rounds to 20
    assert np.array_equal(crop[top : top + 9], band)
    assert np.all(crop[:top] == band[0])


def test_tiny_faces_are_enlarged():
    """A 10-pixel face in a 20-pixel image where every pixel is 10 x column + 4 x row: the crop
    is the box's pixels alone (10*5 + 4*5 = 70 at its top-left, 10*14 + 4*14 = 196 at its
    bottom-right, nothing of the image around it), enlarged smoothly: rising along every row and
    down every column (to within the interpolation's rounding)."""
    rows, columns = np.mgrid[0:20, 0:20]
    gray = (10 * columns + 4 * rows).astype(np.uint8)
    crop = crop_face(gray, FaceBox(5, 5, 10, 10), margin=1.0, size=48)
    assert crop.shape == (48, 48)
    assert crop[0, 0] == 70 and crop[-1, -1] == 196
    assert crop.min() == 70 and crop.max() == 196
    assert np.diff(crop.astype(int), axis=1).min() >= -1
    assert np.diff(crop.astype(int), axis=0).min() >= -1
    assert crop[0, -1] - crop[0, 0] == 10 * 9 and crop[-1, 0] - crop[0, 0] == 4 * 9
    assert len(np.unique(crop[0])) > 10  # enlarged, not one pixel repeated
