"""The pipeline's choice of resolution: large JPEGs decoded reduced, boxes in full pixels."""

from __future__ import annotations

import pytest

from harness.photos import scene
from tests.fixtures.service import encode


def _face_centre(answer: dict) -> tuple[float, float]:
    (face,) = answer["faces"]
    box = face["box"]
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


@pytest.mark.parametrize("detection_max_side", [320, 640])
def test_a_reduced_jpeg_decode_finds_the_face_where_a_full_decode_does(
    make_client, detection_max_side
):
    """1080p with faces searched at 320 px: the JPEG is decoded at 1/2 (960x540), the PNG of the
    same photo in full; both answers give the same box in pixels of the 1920x1080 image."""
    photo = scene(1920, 1080)
    with make_client(detection_max_side=detection_max_side) as client:
        reduced = client.post("/predict", files={"file": encode(photo, "JPEG", quality=95)})
        full = client.post("/predict", files={"file": encode(photo, "PNG")})
    assert reduced.status_code == full.status_code == 200
    for answer in (reduced.json(), full.json()):
        assert (answer["width"], answer["height"]) == (1920, 1080)
    (reduced_face,), (full_face,) = reduced.json()["faces"], full.json()["faces"]
    (x, y), (full_x, full_y) = _face_centre(reduced.json()), _face_centre(full.json())
    side = full_face["box"]["width"]
    assert abs(x - full_x) < 0.05 * side and abs(y - full_y) < 0.05 * side
    assert abs(reduced_face["box"]["width"] - side) < 0.1 * side
    # the portrait fills the frame's height: her face is about 210 pixels wide at 1080p
    assert 180 < side < 240
