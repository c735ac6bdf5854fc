"""Service fixtures: a real test model, the real portrait, and clients of the real app."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.conftest import DATA_DIR
from tests.service.browser import NO_CHROMIUM
from tests.service.onnx_models import build_emotion_model

PORTRAIT = DATA_DIR / "astronaut.jpg"
"""Eileen Collins, NASA portrait (public domain); one frontal face at about (177, 66, 95, 95)."""


def encode(image: Image.Image | np.ndarray, format: str = "PNG", **options: Any) -> bytes:
    """An image (or a uint8/uint16 array) as file bytes in `format`."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_emotion_model(tmp_path_factory.mktemp("model") / "emotion.onnx")


@pytest.fixture(scope="session")
def portrait_bytes() -> bytes:
    return PORTRAIT.read_bytes()


@pytest.fixture(scope="session")
def portrait() -> Image.Image:
    with Image.open(PORTRAIT) as image:
        return image.convert("RGB")


@pytest.fixture(scope="session")
def portrait_gray(portrait: Image.Image) -> np.ndarray:
    return np.asarray(portrait.convert("L"))


@pytest.fixture(scope="session")
def two_faces(portrait: Image.Image) -> bytes:
    """The portrait, and beside it the same at half size: two faces of different sizes."""
    canvas = Image.new("RGB", (768, 512), (200, 200, 200))
    canvas.paste(portrait.resize((256, 256), Image.Resampling.LANCZOS), (0, 128))
    canvas.paste(portrait, (256, 0))
    return encode(canvas, "PNG")


@pytest.fixture(scope="session")
def make_client(model_path: Path) -> Callable[..., AbstractContextManager[TestClient]]:
    """A started app (model loaded, warm) with settings overridden by keyword arguments."""

    @contextmanager
    def started(**overrides: Any) -> Iterator[TestClient]:
        settings = Settings(**{"model_path": model_path, **overrides})
        with TestClient(create_app(settings)) as client:
            yield client

    return started


@pytest.fixture(scope="session")
def client(make_client: Callable[..., AbstractContextManager[TestClient]]) -> Iterator[TestClient]:
    with make_client() as started:
        yield started


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """Browser tests skipped for want of a browser must not pass unnoticed in a green run: say
    so last, below the short summary, where the eye lands."""
    yield
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if NO_CHROMIUM in str(report.longrepr)
    ]
    if skipped:
        terminalreporter.write_sep(
            "!",
            f"{len(skipped)} BROWSER TESTS DID NOT RUN: {NO_CHROMIUM}. "
            "Install it (apt-get install chromium) or set CHROMIUM; in CI this fails",
            red=True,
            bold=True,
        )
