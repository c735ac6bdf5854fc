"""POST /predict/annotated: the image back with the faces boxed and labelled, PNG or JPEG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.annotate import EMOTION_COLORS
from service.app import create_app
from service.settings import Settings
from tests.fixtures.service import encode


def annotated(client: TestClient, data: bytes, query: str = "", accept: str | None = None):
    headers = {"Accept": accept} if accept is not None else {}
    return client.post(f"/predict/annotated{query}", files={"file": data}, headers=headers)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def left_edge(image: np.ndarray, box: dict) -> np.ndarray:
    """The pixels one in from the box's left side, along its middle half."""
    top, bottom = box["y"] + box["height"] // 4, box["y"] + 3 * box["height"] // 4
    return image[top:bottom, box["x"] + 1]


def test_a_png_of_the_photo_with_the_face_boxed_in_its_emotion_colour(
    client, portrait_bytes, portrait
):
    response = annotated(client, portrait_bytes)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["vary"] == "Accept"
    assert response.headers["content-disposition"] == 'inline; filename="annotated.png"'
    drawn = pixels(response.content)
    original = np.asarray(portrait).astype(int)
    assert drawn.shape == original.shape == (512, 512, 3)

    (face,) = client.post("/predict", files={"file": portrait_bytes}).json()["faces"]
    box = face["box"]
    color = np.array(EMOTION_COLORS[face["emotion"]])
    assert np.abs(left_edge(drawn, box) - color).max() <= 2
    assert np.abs(left_edge(original, box) - color).mean() > 40  # it was not that colour before

    label = drawn[box["y"] - 12 : box["y"] - 2, box["x"] : box["x"] + 40]
    assert np.abs(label - original[box["y"] - 12 : box["y"] - 2, box["x"] : box["x"] + 40]).max()
    inside = (slice(box["y"] + 10, box["y"] + box["height"] - 10),)
    inside += (slice(box["x"] + 10, box["x"] + box["width"] - 10),)
    assert np.array_equal(drawn[inside], original[inside])  # the face itself is left alone
    below = box["y"] + box["height"] + 5
    assert np.array_equal(drawn[below:], original[below:])  # and so is the rest


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "image/png"),
        ("", "image/png"),
        ("*/*", "image/png"),
        ("image/*", "image/png"),
        ("image/png", "image/png"),
        ("image/jpeg", "image/jpeg"),
        ("image/jpeg, image/png;q=0.8", "image/jpeg"),
        ("image/png;q=0.5, image/*", "image/jpeg"),
        ("image/png;q=0, */*", "image/jpeg"),
        ("text/html,application/xhtml+xml,image/webp,*/*;q=0.8", "image/png"),
    ],
)
def test_accept_chooses_png_or_jpeg(client, portrait_bytes, accept, media_type):
    response = annotated(client, portrait_bytes, accept=accept)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    expected_format = {"image/png": "PNG", "image/jpeg": "JPEG"}[media_type]
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == expected_format
        assert image.size == (512, 512)


@pytest.mark.parametrize(
    "accept", ["application/json", "text/html", "image/webp", "image/png;q=0, image/jpeg;q=0"]
)
def test_an_accept_that_allows_neither_format_is_406(client, portrait_bytes, accept):
    response = annotated(client, portrait_bytes, accept=accept)
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert "image/png" in detail and "image/jpeg" in detail and "/predict" in detail


def test_an_accept_header_that_cannot_be_parsed_is_400(client, portrait_bytes):
    response = annotated(client, portrait_bytes, accept="garbage")
    assert response.status_code == 400
    assert "Accept header" in response.json()["detail"]


def test_a_jpeg_answer_keeps_the_box_where_predict_says(client, portrait_bytes):
    response = annotated(client, portrait_bytes, accept="image/jpeg")
    (face,) = client.post("/predict", files={"file": portrait_bytes}).json()["faces"]
    color = np.array(EMOTION_COLORS[face["emotion"]])
    assert np.abs(left_edge(pixels(response.content), face["box"]) - color).mean() < 30


def test_the_parameters_of_predict_apply(client, portrait_bytes, two_faces):
    whole = pixels(annotated(client, portrait_bytes, "?detect=never").content)
    (face,) = client.post("/predict?detect=never", files={"file": portrait_bytes}).json()["faces"]
    color = np.array(EMOTION_COLORS[face["emotion"]])
    assert np.abs(whole[200:300, 0] - color).max() <= 2  # the box is the image's own edge

    faces = client.post("/predict", files={"file": two_faces}).json()["faces"]
    small = faces[1]["box"]
    both = pixels(annotated(client, two_faces).content)
    largest = pixels(annotated(client, two_faces, "?max_faces=1").content)
    original = pixels(two_faces)
    assert not np.array_equal(left_edge(both, small), left_edge(original, small))
    assert np.array_equal(left_edge(largest, small), left_edge(original, small))


def test_exif_rotated_and_transparent_images_are_drawn_upright_on_white(client, portrait):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated: display needs 90 degrees counter-clockwise
    stored = portrait.transpose(Image.Transpose.ROTATE_270).crop((0, 0, 512, 400))
    rotated = annotated(client, encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    with Image.open(io.BytesIO(rotated.content)) as image:
        assert image.size == (400, 512)

    rgba = portrait.convert("RGBA")
    alpha = np.full((512, 512), 255, np.uint8)
    alpha[400:, :] = 0  # the bottom strip, far from the face, fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    drawn = pixels(annotated(client, encode(rgba)).content)
    assert np.all(drawn[400:] == 255)


def test_503_before_the_model_is_loaded(model_path, portrait_bytes):
    unstarted = TestClient(create_app(Settings(model_path=model_path)))  # no lifespan run
    response = unstarted.post("/predict/annotated", files={"file": portrait_bytes})
    assert response.status_code == 503
    assert "not loaded yet" in response.json()["detail"]


def test_openapi_describes_both_image_types_and_the_same_input_as_predict(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/predict/annotated"]["post"]
    predict = schema["paths"]["/predict"]["post"]
    assert set(operation["responses"]["200"]["content"]) == {"image/png", "image/jpeg"}
    for content in operation["responses"]["200"]["content"].values():
        assert content["schema"] == {"type": "string", "format": "binary"}
    assert {"400", "406", "413", "415", "422", "503"} <= set(operation["responses"])
    assert operation["responses"]["406"]["content"]["application/json"]["example"]["detail"]
    assert operation["parameters"] == predict["parameters"]

    def body_fields(operation: dict) -> dict:
        reference = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
        return schema["components"]["schemas"][reference.rsplit("/", 1)[1]]["properties"]

    assert body_fields(operation) == body_fields(predict)
