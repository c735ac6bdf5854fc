"""Every endpoint through the real app, as a client sees it."""

from __future__ import annotations

import hashlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from contract.emotion import LABELS
from harness.server import running_service
from service.app import create_app
from service.faces import FaceBox, crop_face
from service.images import ImageLimits, decode_grayscale
from service.model import EmotionModel
from service.settings import Settings
from tests.fixtures.service import encode
from tests.unit.service.test_bad_input import BAD_FILES


def assert_face_answer(face: dict) -> None:
    probabilities = face["probabilities"]
    assert list(probabilities) == list(LABELS)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert face["emotion"] == max(probabilities, key=probabilities.get)
    assert face["confidence"] == probabilities[face["emotion"]]


def test_health_answers_before_the_model_is_loaded(model_path):
    unstarted = TestClient(create_app(Settings(model_path=model_path)))  # no lifespan run
    assert unstarted.get("/health").json() == {"status": "ok"}
    ready = unstarted.get("/ready")
    assert ready.status_code == 503
    assert ready.json() == {"status": "loading", "model": None}
    assert ready.headers["retry-after"]
    for response in (
        unstarted.get("/model"),
        unstarted.post("/predict", files={"file": ("a.png", encode(np.zeros((9, 9), np.uint8)))}),
    ):
        assert response.status_code == 503
        assert "not loaded yet" in response.json()["detail"]


def test_ready_after_loading_and_warm_up(client, model_path):
    model_id = hashlib.sha256(model_path.read_bytes()).hexdigest()
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "model": model_id}


def test_model_describes_labels_input_id_and_training_metrics(client, model_path):
    info = client.get("/model").json()
    assert info["id"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert info["labels"] == list(LABELS)
    assert info["input_shape"] == [None, 48, 48, 1]
    assert info["contract"] == {
        "input_size": 48,
        "pixel_scale": 1.0,
        "crop_margin": 1.0,
        "version": 1,
    }
    assert info["metrics"] == {"test_accuracy": 0.5, "test_macro_f1": 0.4}
    assert info["dataset_sha256"] == "0" * 64


def test_model_metrics_are_null_when_the_artifact_has_none(make_client, tmp_path):
    from tests.fixtures.onnx_models import build_emotion_model

    bare = build_emotion_model(tmp_path / "bare.onnx", metadata={})
    with make_client(model_path=bare) as bare_client:
        info = bare_client.get("/model").json()
    assert info["metrics"] is None and info["created"] is None


@pytest.mark.parametrize(
    ("members", "listed"),
    [
        (
            [{"id": "a" * 64, "name": "seed2", "weight": 0.75, "validation": {"accuracy": 0.7}}],
            [{"id": "a" * 64, "name": "seed2", "weight": 0.75, "validation_accuracy": 0.7}],
        ),
        (  # built before members were named: listed without a name
            [{"id": "a" * 64, "file": "emotion.onnx", "weight": 0.75}],
            [{"id": "a" * 64, "name": None, "weight": 0.75, "validation_accuracy": None}],
        ),
        ([{"id": "a" * 64, "weight": "NaN"}], None),  # JSON cannot carry it: reported absent
        ([{"weight": 0.5}], None),
        ("not a list", None),
    ],
)
def test_model_lists_an_ensembles_members_and_survives_a_garbled_list(
    make_client, tmp_path, members, listed
):
    import json

    from contract.emotion import ENSEMBLE_KEY
    from tests.fixtures.onnx_models import build_emotion_model

    path = build_emotion_model(
        tmp_path / "ensemble.onnx", metadata={ENSEMBLE_KEY: json.dumps({"members": members})}
    )
    with make_client(model_path=path) as ensemble_client:
        response = ensemble_client.get("/model")
    assert response.status_code == 200
    assert response.json()["members"] == listed


def test_predict_finds_the_face_in_the_portrait(client, portrait_bytes, model_path):
    response = client.post("/predict", files={"file": ("portrait.jpg", portrait_bytes)})
    assert response.status_code == 200
    answer = response.json()
    assert answer["width"] == 512 and answer["height"] == 512
    assert answer["model"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    (face,) = answer["faces"]
    assert face["detected"] is True
    box = face["box"]
    assert abs(box["x"] + box["width"] / 2 - 224) < 10
    assert abs(box["y"] + box["height"] / 2 - 113) < 10
    assert_face_answer(face)


def test_predict_answers_what_the_model_says_for_the_face_crop(client, portrait_bytes, model_path):
    face = client.post("/predict", files={"file": portrait_bytes}).json()["faces"][0]
    limits = ImageLimits(max_bytes=10**7, max_pixels=10**7, max_aspect_ratio=20)
    gray = decode_grayscale(portrait_bytes, limits)
    crop = crop_face(gray, FaceBox(**face["box"]), margin=1.0, size=48)
    expected = EmotionModel.load(model_path).predict(crop[None])[0]
    assert list(face["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-5)


def test_faces_come_largest_first_and_max_faces_limits_them(client, two_faces):
    faces = client.post("/predict", files={"file": two_faces}).json()["faces"]
    assert len(faces) == 2
    areas = [face["box"]["width"] * face["box"]["height"] for face in faces]
    assert areas[0] > areas[1]
    only = client.post("/predict?max_faces=1", files={"file": two_faces}).json()["faces"]
    assert only == faces[:1]


def test_detect_modes(client, portrait_bytes):
    blank = encode(np.full((120, 200), 128, np.uint8))
    auto = client.post("/predict", files={"file": blank}).json()
    (whole,) = auto["faces"]
    assert whole["detected"] is False
    assert whole["box"] == {"x": 0, "y": 0, "width": 200, "height": 120}
    assert_face_answer(whole)

    always = client.post("/predict?detect=always", files={"file": blank}).json()
    assert always["faces"] == [] and always["width"] == 200

    never = client.post("/predict?detect=never", files={"file": portrait_bytes}).json()
    (face,) = never["faces"]
    assert face["detected"] is False
    assert face["box"] == {"x": 0, "y": 0, "width": 512, "height": 512}


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 20), (20, 1)])
def test_tiny_images_are_classified_whole(client, size):
    answer = client.post("/predict", files={"file": encode(Image.new("L", size, 100))}).json()
    (face,) = answer["faces"]
    assert face["detected"] is False
    assert (face["box"]["width"], face["box"]["height"]) == size


def test_fer2013_style_crop_is_classified_whole(client, portrait_gray):
    crop = np.asarray(Image.fromarray(portrait_gray[66:161, 177:272]).resize((48, 48)))
    answer = client.post("/predict?detect=never", files={"file": encode(crop)}).json()
    assert answer["width"] == 48 and len(answer["faces"]) == 1


def test_boxes_are_in_the_upright_image_of_an_exif_rotated_photo(client, portrait):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated: display needs 90 degrees counter-clockwise
    stored = portrait.transpose(Image.Transpose.ROTATE_270).crop((0, 0, 512, 400))
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    answer = client.post("/predict", files={"file": data}).json()
    assert (answer["width"], answer["height"]) == (400, 512)
    (face,) = answer["faces"]
    assert face["detected"] is True  # the cascade only finds upright faces


def test_batch_answers_each_file_in_order_and_a_bad_file_spoils_nothing(
    client, portrait_bytes, two_faces
):
    files = [
        ("files", ("a.jpg", portrait_bytes)),
        ("files", ("b.txt", b"not an image")),
        ("files", ("c.png", two_faces)),
        ("files", ("d.png", b"")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    first, bad, second, empty = response.json()["results"]
    assert first == client.post("/predict", files={"file": portrait_bytes}).json()
    assert bad == {
        "detail": "the file is not a supported image: send JPEG, PNG, WebP, BMP or TIFF",
        "status": 415,
    }
    assert len(second["faces"]) == 2
    assert empty == {"detail": "the uploaded file is empty", "status": 400}


def test_batch_runs_one_inference_for_all_faces(client, portrait_bytes, two_faces, monkeypatch):
    model = client.app.state.service.model
    batches = []
    real_predict = model.predict

    def counted(crops):
        batches.append(len(crops))
        return real_predict(crops)

    monkeypatch.setattr(model, "predict", counted)
    files = [("files", portrait_bytes), ("files", two_faces), ("files", portrait_bytes)]
    results = client.post("/predict/batch", files=files).json()["results"]
    assert [len(result["faces"]) for result in results] == [1, 2, 1]
    assert batches == [4]


def test_batch_file_count_limit(make_client, portrait_bytes):
    with make_client(max_batch_files=2) as limited:
        files = [("files", portrait_bytes)] * 3
        response = limited.post("/predict/batch", files=files)
        assert response.status_code == 422
        assert "at most 2 files" in response.json()["detail"]
        assert limited.post("/predict/batch", files=files[:2]).status_code == 200


def test_batch_file_over_the_size_limit_is_413_for_that_file_only(make_client, portrait_bytes):
    small = encode(np.full((20, 20), 128, np.uint8))
    with make_client(max_upload_bytes=len(portrait_bytes) - 1) as limited:
        files = [("files", portrait_bytes), ("files", small)]
        big, fine = limited.post("/predict/batch", files=files).json()["results"]
    assert big["status"] == 413 and "limit" in big["detail"]
    assert len(fine["faces"]) == 1


def test_openapi_documents_every_endpoint_with_examples(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {
        "/predict",
        "/predict/batch",
        "/predict/annotated",
        "/health",
        "/ready",
        "/model",
    } <= set(paths)
    predict = paths["/predict"]["post"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(predict["responses"])
    for status in ("400", "413", "415", "422"):
        assert predict["responses"][status]["content"]["application/json"]["example"]["detail"]
    parameters = {parameter["name"]: parameter for parameter in predict["parameters"]}
    assert parameters["max_faces"]["schema"]["maximum"] == 1000
    assert set(schema["components"]["schemas"]["DetectMode"]["enum"]) == {
        "auto",
        "always",
        "never",
    }
    assert schema["components"]["schemas"]["Prediction"]["examples"]
    for path in paths.values():
        for operation in path.values():
            assert operation.get("summary") and operation.get("description")
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_cors_is_off_unless_origins_are_configured(client, make_client):
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
    }
    assert (
        "access-control-allow-origin" not in client.options("/predict", headers=preflight).headers
    )
    with make_client(cors_origins="https://app.example.com, https://other.example.com") as cors:
        response = cors.options("/predict", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        refused = cors.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in refused.headers


def test_a_bug_of_ours_is_a_json_500_and_the_service_keeps_serving(
    model_path, portrait_bytes, monkeypatch
):
    with TestClient(
        create_app(Settings(model_path=model_path)), raise_server_exceptions=False
    ) as broken:
        model = broken.app.state.service.model
        real_predict = model.predict

        def failing(crops):
            raise RuntimeError("simulated bug")

        monkeypatch.setattr(model, "predict", failing)
        response = broken.post("/predict", files={"file": portrait_bytes})
        assert response.status_code == 500
        assert response.json() == {
            "detail": "internal error: the service logged it; please report it"
        }
        monkeypatch.setattr(model, "predict", real_predict)
        assert broken.post("/predict", files={"file": portrait_bytes}).status_code == 200


# --- the image as the request body (Content-Type: image/*), beside multipart -------------------

RAW_PATHS = ("/predict", "/predict/annotated")


def raw(data: bytes, media_type: str = "image/jpeg") -> dict:
    return {"content": data, "headers": {"Content-Type": media_type}}


@pytest.mark.parametrize(
    "media_type",
    ["image/jpeg", "image/png", "IMAGE/JPEG; charset=binary", "application/octet-stream"],
)
def test_a_raw_image_body_gets_the_answer_multipart_gets(client, two_faces, media_type):
    """The declared type only says "this body is the image": the bytes are read for what they
    are (`two_faces` is a PNG), as a multipart file's are."""
    multipart = client.post("/predict?max_faces=1", files={"file": two_faces})
    response = client.post("/predict?max_faces=1", **raw(two_faces, media_type))
    assert response.status_code == 200
    assert response.json() == multipart.json()
    assert response.json()["faces_found"] == 2
    annotated = client.post("/predict/annotated", **raw(two_faces, media_type))
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/png"


@pytest.mark.parametrize("path", RAW_PATHS)
@pytest.mark.parametrize(("data", "status", "phrase"), BAD_FILES)
def test_a_bad_raw_body_is_refused_as_the_same_multipart_file_is(
    client, portrait_bytes, path, data, status, phrase
):
    response = client.post(path, **raw(data))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert phrase in response.json()["detail"]
    assert response.json() == client.post(path, files={"file": ("upload", data)}).json()
    assert client.post(path, **raw(portrait_bytes)).status_code == 200


@pytest.mark.parametrize(
    "media_type", ["text/plain", "application/json", "application/x-www-form-urlencoded", ""]
)
def test_a_body_that_does_not_say_it_is_an_image_is_422_saying_how_to_send_one(
    client, portrait_bytes, media_type
):
    for path in RAW_PATHS:
        response = client.post(path, **raw(portrait_bytes, media_type))
        assert response.status_code == 422
        assert "Content-Type: image/jpeg" in response.json()["detail"]
        assert "multipart" in response.json()["detail"]


def test_a_raw_body_over_the_size_limits_is_413(make_client, portrait_bytes):
    with make_client(max_upload_bytes=len(portrait_bytes) - 1) as limited:
        for path in RAW_PATHS:
            response = limited.post(path, **raw(portrait_bytes))
            assert response.status_code == 413
            assert "the limit is" in response.json()["detail"]
            big = b"\xff" * (len(portrait_bytes) + 1024 * 1024)  # over the body limit too
            response = limited.post(path, **raw(big))
            assert response.status_code == 413
            assert "the request body is over the limit" in response.json()["detail"]
            small = encode(np.full((40, 40), 128, np.uint8))
            assert limited.post(path, **raw(small, "image/png")).status_code == 200


def test_raw_bodies_over_real_http(model_path, portrait_bytes):
    """Through uvicorn: keep-alive requests alternating raw and multipart get one answer, a
    corrupt body its 4xx, and a body announced over the limit is refused before it is sent."""
    with (
        running_service(model_path, settings={"MAX_UPLOAD_BYTES": str(1024 * 1024)}) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        answers = [
            http.post("/predict", **raw(portrait_bytes)).json(),
            http.post("/predict", files={"file": portrait_bytes}).json(),
            http.post("/predict", **raw(portrait_bytes)).json(),
        ]
        assert answers[0] == answers[1] == answers[2]
        assert len(answers[0]["faces"]) == 1
        corrupt = http.post("/predict", **raw(portrait_bytes[: len(portrait_bytes) // 2]))
        assert corrupt.status_code == 400 and "corrupt" in corrupt.json()["detail"]
        empty = http.post("/predict", **raw(b""))
        assert empty.status_code == 400 and "empty" in empty.json()["detail"]
        over = http.post("/predict", **raw(b"\xff" * (2 * 1024 * 1024)))
        assert over.status_code == 413 and "limit" in over.json()["detail"]
        assert http.post("/predict", **raw(portrait_bytes)).status_code == 200
