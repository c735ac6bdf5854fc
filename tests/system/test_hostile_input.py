"""Hostile and odd uploads, sent over HTTP to a real `python -m service` with its default limits.

Each is answered with the right status and a JSON `detail` (or, for an odd but valid image, a
sensible answer), and the service still answers the portrait afterwards. In-process variants of
some of these (the app through TestClient) are in test_bad_input.py and test_images.py; here the
whole server is in the path, uvicorn's HTTP parsing and the streaming body limit included.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.raw_http import declare_and_wait, stream_until_answered
from harness.server import running_service
from tests.fixtures.service import encode
from tests.unit.service.test_images import png_claiming, sixteen_bit_png

MEGABYTE = 1024 * 1024
DEFAULT_UPLOAD_LIMIT = 10 * MEGABYTE


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 baseline JPEG whose frame header (SOF0) is rewritten to claim `width` x
    `height` (at most 65535 each: the header's fields are 16-bit)."""
    data = bytearray(encode(Image.new("L", (8, 8), 128), "JPEG"))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def server(model_path) -> Iterator[str]:
    with running_service(model_path, settings={"LOG_LEVEL": "warning"}) as url:
        yield url


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


@pytest.fixture
def still_serving(http, portrait_bytes) -> Iterator[None]:
    """After the test: /health answers and the portrait still gets its one face."""
    yield
    assert http.get("/health").status_code == 200
    answer = http.post("/predict", files={"file": ("portrait.jpg", portrait_bytes)})
    assert answer.status_code == 200
    assert [face["detected"] for face in answer.json()["faces"]] == [True]


def _predict(http: httpx.Client, data: bytes) -> httpx.Response:
    return http.post("/predict", files={"file": ("upload", data)})


@pytest.mark.parametrize(
    ("data", "status", "phrase"),
    [
        pytest.param(png_claiming(30_000, 30_000), 413, "50000000 pixels", id="png-30000x30000"),
        pytest.param(
            png_claiming(100_000, 100_000), 413, "50000000 pixels", id="png-100000x100000"
        ),
        pytest.param(jpeg_claiming(30_000, 30_000), 413, "50000000 pixels", id="jpeg-30000x30000"),
        # 100000 does not fit a JPEG header; 65535 is the most one can claim
        pytest.param(jpeg_claiming(65_535, 65_535), 413, "50000000 pixels", id="jpeg-65535x65535"),
        pytest.param(
            encode(Image.new("RGB", (4000, 50), (90, 120, 150)), "PNG"),
            422,
            "aspect ratio 80.0",
            id="4000x50",
        ),
    ],
)
@pytest.mark.usefixtures("still_serving")
def test_refused_with_a_json_detail(http, data, status, phrase):
    assert len(data) < 64 * 1024  # refused on the header, whatever it claims
    response = _predict(http, data)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert phrase in response.json()["detail"]


@pytest.mark.usefixtures("still_serving")
def test_a_40_mb_upload_is_refused_before_its_body_is_sent(server):
    status, body = declare_and_wait(server, 40 * MEGABYTE)
    assert status == 413
    assert "over the limit" in body["detail"]


@pytest.mark.usefixtures("still_serving")
def test_a_40_mb_upload_of_unknown_length_is_cut_off_while_it_streams(server):
    status, body, sent = stream_until_answered(server, 40 * MEGABYTE)
    assert status == 413
    assert "over the limit" in body["detail"]
    assert sent < 40 * MEGABYTE / 2  # a little past the 10 MB limit: socket buffers hold a few MB


def _sixteen_bit_gray(portrait: Image.Image) -> bytes:
    deep = np.asarray(portrait.convert("L")).astype(np.uint16) * 257
    return encode(Image.fromarray(deep), "PNG")


STRIP = 60
"""Columns of the left edge, away from the face, made transparent."""


def _rgba_with_a_transparent_strip(portrait: Image.Image) -> bytes:
    rgba = portrait.convert("RGBA")
    alpha = np.full((512, 512), 255, np.uint8)
    alpha[:, :STRIP] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return encode(rgba, "PNG")


def _strip_shown_on_white(portrait: Image.Image) -> Image.Image:
    """What a viewer shows of `_rgba_with_a_transparent_strip`: the strip white."""
    shown = np.asarray(portrait).copy()
    shown[:, :STRIP] = 255
    return Image.fromarray(shown)


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        pytest.param(_sixteen_bit_gray, None, id="png-16-bit-gray"),
        pytest.param(
            lambda portrait: sixteen_bit_png(portrait, alpha=False), None, id="png-16-bit-rgb"
        ),
        pytest.param(
            lambda portrait: sixteen_bit_png(portrait, alpha=True), None, id="png-16-bit-rgba"
        ),
        pytest.param(_rgba_with_a_transparent_strip, _strip_shown_on_white, id="png-rgba"),
    ],
)
@pytest.mark.usefixtures("still_serving")
def test_deep_and_transparent_images_get_the_answer_of_the_8_bit_image(http, portrait, make, shown):
    """The answer of the 8-bit image a viewer sees (transparent pixels on white)."""
    reference = _predict(http, encode(shown(portrait) if shown else portrait, "PNG")).json()
    response = _predict(http, make(portrait))
    assert response.status_code == 200
    answer = response.json()
    assert (answer["width"], answer["height"]) == (512, 512)
    ((face,), (expected,)) = answer["faces"], reference["faces"]
    assert face["detected"] is True
    for key in ("x", "y", "width", "height"):
        assert abs(face["box"][key] - expected["box"][key]) <= 0.05 * expected["box"]["width"]
    for label, probability in expected["probabilities"].items():
        assert face["probabilities"][label] == pytest.approx(probability, abs=0.02)


@pytest.mark.parametrize("format", ["PNG", "JPEG", "BMP"])
@pytest.mark.usefixtures("still_serving")
def test_a_1x1_image_is_classified_whole(http, format):
    response = _predict(http, encode(Image.new("RGB", (1, 1), (200, 150, 100)), format))
    assert response.status_code == 200
    answer = response.json()
    assert (answer["width"], answer["height"]) == (1, 1)
    (face,) = answer["faces"]
    assert face["detected"] is False
    assert face["box"] == {"x": 0, "y": 0, "width": 1, "height": 1}
    assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-4)
