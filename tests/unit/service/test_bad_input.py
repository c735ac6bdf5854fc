"""Every client mistake is a 4xx with a JSON `detail`, never a 5xx; the service keeps serving."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from harness.videos import pan, write_video
from tests.fixtures.service import encode
from tests.unit.service.test_images import png_claiming


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("face.png", encode(np.zeros((48, 48), np.uint8)))
    return buffer.getvalue()


def _truncated_jpeg() -> bytes:
    data = encode(Image.new("RGB", (300, 300), (90, 120, 150)), "JPEG")
    return data[: len(data) // 2]


BAD_FILES = [
    pytest.param(b"", 400, "empty", id="empty"),
    pytest.param(b"hello, I am a text file", 415, "not a supported image", id="text"),
    pytest.param(
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        415,
        "not a supported image",
        id="svg",
    ),
    pytest.param(b"<html><body>hi</body></html>", 415, "not a supported image", id="html"),
    pytest.param(_zip(), 415, "not a supported image", id="zip"),
    pytest.param(_truncated_jpeg(), 400, "truncated or corrupt", id="truncated-jpeg"),
    pytest.param(png_claiming(100_000, 100_000), 413, "pixels", id="png-claims-1e10-pixels"),
    pytest.param(encode(np.zeros((10, 1000), np.uint8)), 422, "aspect ratio", id="aspect-ratio"),
]


ONE_IMAGE_PATHS = ("/predict", "/predict/annotated")
"""The endpoints that take one `file`: the same input, the same refusals."""


@pytest.mark.parametrize("path", ONE_IMAGE_PATHS)
@pytest.mark.parametrize(("data", "status", "phrase"), BAD_FILES)
def test_bad_file_is_a_4xx_with_a_detail(client, portrait_bytes, path, data, status, phrase):
    response = client.post(path, files={"file": ("upload", data)})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert phrase in response.json()["detail"]
    assert client.post(path, files={"file": portrait_bytes}).status_code == 200


@pytest.mark.parametrize(("data", "status", "phrase"), BAD_FILES)
def test_bad_file_in_a_batch_is_reported_in_its_place(client, portrait_bytes, data, status, phrase):
    files = [("files", ("good.jpg", portrait_bytes)), ("files", ("bad", data))]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    good, bad = response.json()["results"]
    assert len(good["faces"]) == 1
    assert bad["status"] == status and phrase in bad["detail"]


@pytest.mark.parametrize(
    "query",
    ["detect=sometimes", "max_faces=0", "max_faces=1001", "max_faces=many", "max_faces=2.5"],
)
def test_bad_parameters_are_422(client, portrait_bytes, query):
    for path in (*ONE_IMAGE_PATHS, "/predict/batch"):
        field = "files" if path == "/predict/batch" else "file"
        response = client.post(f"{path}?{query}", files={field: portrait_bytes})
        assert response.status_code == 422
        assert response.json()["detail"]


@pytest.mark.parametrize(
    "request_options",
    [
        pytest.param({"files": {"image": b"x"}}, id="wrong-field-name"),
        pytest.param({"data": {"file": "not a file"}}, id="field-is-text"),
        pytest.param({"json": {"file": "aGVsbG8="}}, id="json-body"),
        pytest.param({}, id="no-body"),
    ],
)
def test_missing_file_field_is_422(client, request_options):
    for path in (*ONE_IMAGE_PATHS, "/predict/batch"):
        response = client.post(path, **request_options)
        assert response.status_code == 422
        assert response.json()["detail"]


@pytest.mark.parametrize("path", ONE_IMAGE_PATHS)
def test_upload_over_the_size_limit_is_413(make_client, portrait_bytes, path):
    with make_client(max_upload_bytes=len(portrait_bytes) - 1) as limited:
        response = limited.post(path, files={"file": portrait_bytes})
        assert response.status_code == 413
        assert "limit" in response.json()["detail"]
        big = b"\xff" * (len(portrait_bytes) + 1024 * 1024)  # over the body limit too
        response = limited.post(path, files={"file": big})
        assert response.status_code == 413
        assert "the request body is over the limit" in response.json()["detail"]
        small = encode(np.full((40, 40), 128, np.uint8))
        assert limited.post(path, files={"file": small}).status_code == 200


@pytest.mark.parametrize("path", ONE_IMAGE_PATHS)
def test_an_image_with_no_decoding_memory_free_is_a_503_to_retry(make_client, portrait_bytes, path):
    with make_client() as client:
        memory = client.app.state.service.pipeline.limits.memory
        memory.wait_seconds = 0.05  # the service waits 10 s; the answer is the same
        with memory.reserve(memory.capacity_bytes):  # large images decoding elsewhere
            response = client.post(path, files={"file": portrait_bytes})
            batch = client.post("/predict/batch", files=[("files", portrait_bytes)])
        assert response.status_code == 503
        assert "retry" in response.json()["detail"]
        assert response.headers["Retry-After"] == "1"
        assert batch.status_code == 200 and batch.json()["results"][0]["status"] == 503
        assert client.post(path, files={"file": portrait_bytes}).status_code == 200


def test_a_video_with_no_decoding_memory_free_is_a_503_at_once_and_gives_it_back(
    make_client, tmp_path
):
    clip = write_video(tmp_path / "pan.mkv", pan, count=5).read_bytes()
    with make_client() as client:
        memory = client.app.state.service.pipeline.limits.memory
        with memory.reserve(memory.capacity_bytes):  # large images decoding elsewhere
            response = client.post("/predict/video", files={"file": ("clip", clip)})
        assert response.status_code == 503  # at once: the service would wait 10 s for a photo
        assert "retry" in response.json()["detail"]
        assert response.headers["Retry-After"] == "1"
        assert client.post("/predict/video", files={"file": ("clip", clip)}).status_code == 200
        assert memory.reserved_bytes == 0  # the answered video gave its frames' share back


def test_batch_over_its_total_limit_is_413(make_client, portrait_bytes):
    with make_client(max_batch_bytes=2 * len(portrait_bytes)) as limited:
        response = limited.post("/predict/batch", files=[("files", portrait_bytes)] * 3)
        assert response.status_code == 413
        assert "the request body is over the limit" in response.json()["detail"]


def test_file_names_are_never_used_as_paths(client, portrait_bytes):
    """Whatever the name, the answer is the upload's own: exactly the answer to the same bytes
    under a plain name (a file read at that path would change it, or fail), and nothing of the
    name or of a host file comes back."""
    plain = client.post("/predict", files={"file": ("portrait.jpg", portrait_bytes)})
    assert plain.status_code == 200 and len(plain.json()["faces"]) == 1
    for name in (
        "../../../../etc/passwd",
        "/dev/zero",
        "C:\\boot.ini",
        "\x00.png",
        "a" * 200 + ".png",
    ):
        response = client.post("/predict", files={"file": (name, portrait_bytes)})
        assert response.status_code == 200, name
        assert response.json() == plain.json(), name
        assert "root:" not in response.text and "passwd" not in response.text


def test_unknown_routes_and_methods_are_json_4xx(client):
    assert client.get("/nowhere").json() == {"detail": "Not Found"}
    response = client.get("/predict")
    assert response.status_code == 405 and response.json()["detail"]
