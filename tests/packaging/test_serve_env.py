"""The Docker image without a Docker engine: the same files, the same packages, the same checks.

`Dockerfile.serve` is read, not restated: its COPY sources are copied into a fresh directory, a
fresh virtual environment gets `requirements-serve.txt` alone, and the service must then start
from that directory and answer a real photo, and the image's own HEALTHCHECK command must pass.
A file or package the image would miss fails here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from harness.server import free_port, running_service, service_env
from tests.fixtures.onnx_models import build_emotion_model
from tests.unit.service.test_pages import parsed

TRAINING_PACKAGES = ("tensorflow", "keras", "tf2onnx")


def dockerfile_instructions(path: Path, name: str) -> list[str]:
    """The arguments of every `name` instruction, backslash continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        line.strip()[len(name) :].strip()
        for line in text.splitlines()
        if line.strip().upper().startswith(name + " ")
    ]


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for arguments in dockerfile_instructions(dockerfile, "COPY"):
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        sources.extend(words[:-1])
    return sources


def exec_form(arguments: str) -> list[str]:
    """`CMD ["python", "-c", "..."]` -> the argument list (Docker's exec form is JSON)."""
    return json.loads(arguments[arguments.index("[") :])


def test_dockerfile_copies_only_what_serving_needs_and_runs_unprivileged(repo_root):
    dockerfile = repo_root / "Dockerfile.serve"
    assert sorted(copy_sources(dockerfile)) == [
        "artifacts/",
        "contract/",
        "requirements-serve.txt",
        "service/",
    ]
    assert dockerfile_instructions(dockerfile, "FROM") == ["python:3.11-slim"]
    (user,) = dockerfile_instructions(dockerfile, "USER")
    assert user not in ("root", "0")
    (command,) = dockerfile_instructions(dockerfile, "CMD")
    assert exec_form(command) == ["python", "-m", "service"]
    (healthcheck,) = dockerfile_instructions(dockerfile, "HEALTHCHECK")
    assert "/ready" in healthcheck
    requirements = (repo_root / "requirements-serve.txt").read_text().lower()
    for package in TRAINING_PACKAGES:
        assert not re.search(rf"^{package}\b", requirements, re.MULTILINE)


def test_compose_serves_on_8000_with_a_healthcheck_and_trains_under_a_profile(repo_root):
    compose = (repo_root / "docker-compose.yml").read_text()
    api, train = compose.split("\n  train:")
    assert "dockerfile: Dockerfile.serve" in api and '"8000:8000"' in api
    assert "healthcheck:" in api and "/ready" in api
    assert "profiles: [train]" in train and "dockerfile: Dockerfile.train" in train
    assert "./artifacts:/app/artifacts" in train


@pytest.mark.slow
def test_the_image_contents_serve_with_the_serve_requirements_alone(
    repo_root, tmp_path, portrait_bytes
):
    dockerfile = repo_root / "Dockerfile.serve"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for source in copy_sources(dockerfile):
        origin, target = repo_root / source, app_dir / source
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif origin.exists():
            shutil.copy2(origin, target)
        else:
            assert source == "artifacts/", f"Dockerfile.serve copies {source}, which is missing"
    # Whatever model is shipped, the test serves its own; the face detectors are the shipped
    # ones (YuNet, FACE_DETECTOR's default, and BlazeFace), which the image must carry.
    for detector in ("yunet.onnx", "face_detector.onnx"):
        assert (app_dir / "artifacts" / detector).is_file(), f"the image has no {detector}"
    build_emotion_model(app_dir / "artifacts" / "emotion.onnx")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-r", "requirements-serve.txt"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert install.returncode == 0, install.stderr

    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    names = {package["name"].lower() for package in json.loads(installed.stdout)}
    assert not names & set(TRAINING_PACKAGES), f"the serve set pulls in {names}"

    with running_service(None, python=python, cwd=app_dir) as url:
        response = httpx.post(f"{url}/predict", files={"file": portrait_bytes}, timeout=60)
        assert response.status_code == 200
        (face,) = response.json()["faces"]
        assert face["detected"] is True
        drawn = httpx.post(
            f"{url}/predict/annotated",
            files={"file": portrait_bytes},
            headers={"Accept": "image/jpeg"},
            timeout=60,
        )
        assert drawn.headers["content-type"] == "image/jpeg"
        for page in ("/", "/docs", "/redoc"):  # the page's files and the docs' packaged assets
            for asset in parsed(httpx.get(f"{url}{page}", timeout=30).text).urls:
                assert httpx.get(urljoin(f"{url}{page}", asset), timeout=30).status_code == 200

        (healthcheck,) = dockerfile_instructions(dockerfile, "HEALTHCHECK")
        port = url.rsplit(":", 1)[1]
        check = exec_form(healthcheck)
        assert check[0] == "python"
        result = subprocess.run(
            [python, *check[1:]],
            env=service_env(None, PORT=port),
            cwd=app_dir,
            timeout=30,
        )
        assert result.returncode == 0

    nothing_there = subprocess.run(
        [python, *check[1:]],
        env=service_env(None, PORT=str(free_port())),
        cwd=app_dir,
        capture_output=True,
        timeout=30,
    )
    assert nothing_there.returncode != 0  # the check can fail, too
