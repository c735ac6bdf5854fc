"""`python -m service` as a real uvicorn process, talked to over HTTP."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from harness.raw_http import declare_and_wait, stream_until_answered
from harness.server import running_service, service_env
from tests.fixtures.onnx_models import build_emotion_model

UPLOAD_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def server(model_path):
    with running_service(model_path, settings={"MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}) as url:
        yield url


def test_predict_over_http(server, portrait_bytes):
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/health").json() == {"status": "ok"}
        model = http.get("/model").json()
        response = http.post("/predict", files={"file": ("portrait.jpg", portrait_bytes)})
        assert response.status_code == 200
        (face,) = response.json()["faces"]
        assert face["detected"] is True
        assert response.json()["model"] == model["id"]
        batch = http.post("/predict/batch", files=[("files", portrait_bytes)] * 2).json()
        assert batch["results"] == [response.json()] * 2


def test_uvicorn_can_serve_the_app_by_its_import_string(model_path, portrait_bytes):
    """`uvicorn service.app:app` loads the model in the app's lifespan instead."""
    command = ("-m", "uvicorn", "service.app:app", "--port", "{port}")
    with running_service(model_path, command=command) as url:
        response = httpx.post(f"{url}/predict", files={"file": portrait_bytes}, timeout=30)
        assert len(response.json()["faces"]) == 1


def test_concurrent_requests_get_the_same_answer(server, portrait_bytes):
    def predict(_: int) -> dict:
        response = httpx.post(f"{server}/predict", files={"file": portrait_bytes}, timeout=60)
        assert response.status_code == 200
        return response.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(predict, range(16)))
    assert all(answer == answers[0] for answer in answers)


def test_a_declared_oversize_body_is_refused_before_it_is_sent(server):
    status, body = declare_and_wait(server, 50 * UPLOAD_LIMIT)  # the body still unsent
    assert status == 413
    assert "over the limit" in body["detail"]


def test_an_oversize_body_of_unknown_length_is_cut_off_while_streaming(server):
    """Chunked transfer, no Content-Length: the limit is enforced on the bytes as they arrive."""
    total = 200 * UPLOAD_LIMIT
    status, body, sent = stream_until_answered(server, total)
    assert status == 413
    assert sent < total / 4  # stopped long before the end (socket buffers hold a few MB)
    assert "over the limit" in body["detail"]


def _start_and_fail(model_path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service"],
        env=service_env(model_path, PORT="1", **settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refuses_to_start_without_a_model_and_says_how_to_get_one(tmp_path):
    result = _start_and_fail(tmp_path / "missing.onnx")
    assert result.returncode == 2
    assert "no model file at" in result.stderr
    assert "python -m training train" in result.stderr
    assert "artifacts/emotion.onnx" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("build", "phrase"),
    [
        (lambda path: path.write_bytes(b"garbage" * 100), "not a model onnxruntime can load"),
        (lambda path: build_emotion_model(path, contract=None), "no 'emotion_contract' metadata"),
        (lambda path: build_emotion_model(path, labels=5), "does not match its contract"),
    ],
    ids=["corrupt", "no-contract", "inconsistent"],
)
def test_refuses_to_start_with_an_unusable_model(tmp_path, build, phrase):
    path = tmp_path / "emotion.onnx"
    build(path)
    result = _start_and_fail(path)
    assert result.returncode == 2
    assert phrase in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_corrupt_model_is_refused_whether_checked_in_process_or_in_a_child(tmp_path, workers):
    """With WORKERS > 1 the supervisor checks the files in a child process: the same message
    and exit status come back from there."""
    path = tmp_path / "emotion.onnx"
    path.write_bytes(b"garbage" * 100)
    result = _start_and_fail(path, WORKERS=workers)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot serve the model:")
    assert "not a model onnxruntime can load" in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_to_start_with_bad_settings(model_path):
    result = _start_and_fail(model_path, MAX_UPLOAD_BYTES="lots")
    assert result.returncode == 2
    assert "MAX_UPLOAD_BYTES" in result.stderr.upper()


def test_the_service_never_imports_the_training_stack(model_path):
    """Even where TensorFlow is installed (the dev environment), serving does not load it."""
    code = (
        "import sys, service.__main__, service.app\n"
        "service.app.app\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=service_env(model_path),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    modules = {name.split(".")[0] for name in result.stdout.split()}
    assert not modules & {"tensorflow", "keras", "tf2onnx", "onnx", "training"}
