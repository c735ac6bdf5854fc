"""The contract's `crop_margin`, end to end: a model whose contract says 1.3 is served by a real
`python -m service`, and the face it is given is the square 1.3 times the detector's box around
that box's centre. The expected crop is cut here by hand from the box the service answers, and
the model is run on it directly: the service's probabilities must be that crop's, not the
plain box's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import onnxruntime as ort
import pytest

from contract.emotion import LABELS, ModelContract
from harness.server import running_service
from tests.fixtures.onnx_models import build_emotion_model
from tests.fixtures.service import encode

MARGIN = 1.3


@pytest.fixture(scope="module")
def wide_margin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    contract = ModelContract(crop_margin=MARGIN).to_json()
    return build_emotion_model(
        tmp_path_factory.mktemp("margin") / "emotion.onnx", contract=contract
    )


@pytest.fixture(scope="module")
def service_url(wide_margin_model: Path) -> Iterator[str]:
    with running_service(wide_margin_model, settings={"LOG_LEVEL": "warning"}) as url:
        yield url


def probabilities_of(model: Path, face: np.ndarray) -> np.ndarray:
    """The model run directly on one 48x48 face, as raw pixels in NHWC."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"pixels": face.astype(np.float32)[None, :, :, None]})[0]
    return probabilities


def square_around(gray: np.ndarray, box: dict, margin: float) -> np.ndarray:
    """`margin` times the box's side, around its centre, shrunk to 48x48 by pixel averaging.

    For the portrait's box of side 109 at (172, 59): side round(1.3 * 109) = 142, centre
    (172 + 54.5, 59 + 54.5) = (226.5, 113.5), so columns floor(226.5 - 71) = 155 to 297 and
    rows floor(113.5 - 71) = 42 to 184, all inside the 512x512 image."""
    side = round(margin * max(box["width"], box["height"]))
    left = math.floor(box["x"] + box["width"] / 2 - side / 2)
    top = math.floor(box["y"] + box["height"] / 2 - side / 2)
    assert left >= 0 and top >= 0, "the square must lie inside the image for this test"
    assert left + side <= gray.shape[1] and top + side <= gray.shape[0]
    region = gray[top : top + side, left : left + side]
    return cv2.resize(region, (48, 48), interpolation=cv2.INTER_AREA)


def test_a_model_with_a_wider_margin_gets_the_wider_crop(
    service_url: str, wide_margin_model: Path, portrait_gray: np.ndarray
) -> None:
    # A grey PNG: the service decodes exactly these pixels, so the hand-cut crop is its crop.
    upload = encode(portrait_gray, "PNG")
    model = httpx.get(f"{service_url}/model", timeout=30).json()
    assert model["contract"]["crop_margin"] == MARGIN
    response = httpx.post(f"{service_url}/predict", files={"file": upload}, timeout=30)
    assert response.status_code == 200, response.text
    (face,) = response.json()["faces"]
    assert face["detected"] is True
    served = np.array([face["probabilities"][label] for label in LABELS])

    wide = probabilities_of(wide_margin_model, square_around(portrait_gray, face["box"], MARGIN))
    plain = probabilities_of(wide_margin_model, square_around(portrait_gray, face["box"], 1.0))
    np.testing.assert_allclose(served, wide, atol=2e-3)
    # The test can tell the two crops apart: the plain box's answer is far from the served one.
    assert np.abs(served - plain).max() > 10 * 2e-3
