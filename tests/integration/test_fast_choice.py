"""The fast choice, `artifacts/fast/emotion.onnx`: one network that a user serves instead of the
ensemble by setting MODEL_PATH alone. So it must be a committed network with its evidence, agree
with the default model on the contract (labels, input, pixel scale, crop margin), and be what
the docs say it is."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from contract.emotion import ENSEMBLE_KEY
from service.app import create_app
from service.model import EmotionModel
from service.settings import DEFAULT_MODEL_PATH, Settings
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.fixtures.onnx_metadata import metadata_of

FAST = REPO_ROOT / "artifacts" / "fast" / "emotion.onnx"


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((FAST.parent / "metrics.json").read_text())


def test_it_is_one_committed_member_with_its_own_evidence(metrics: dict) -> None:
    """Byte for byte a member of training/members/ (its command and run are documented there),
    and the PublicTest metrics beside it are that member's."""
    assert ENSEMBLE_KEY not in metadata_of(FAST), "the fast choice must be one network"
    digest = hashlib.sha256(FAST.read_bytes()).hexdigest()
    members = {
        hashlib.sha256(path.read_bytes()).hexdigest(): path.parent
        for path in (REPO_ROOT / "training" / "members").glob("*/emotion.onnx")
    }
    assert digest in members, "artifacts/fast/emotion.onnx is not a committed member"
    assert metrics == json.loads((members[digest] / "metrics.json").read_text())
    assert FAST.stat().st_size < DEFAULT_MODEL_PATH.stat().st_size / 3


def test_it_keeps_the_default_models_contract() -> None:
    """Switching MODEL_PATH changes the weights only: the crops are cut and scaled the same."""
    assert EmotionModel.load(FAST).contract == EmotionModel.load(DEFAULT_MODEL_PATH).contract


def test_served_it_reads_the_smile_and_says_what_it_is(metrics: dict) -> None:
    with TestClient(create_app(Settings(model_path=FAST))) as client:
        portrait = (DATA_DIR / "astronaut.jpg").read_bytes()
        (face,) = client.post("/predict", files={"file": ("portrait.jpg", portrait)}).json()[
            "faces"
        ]
        described = client.get("/model").json()
    assert face["detected"] is True and face["emotion"] == "happy"
    assert described["id"] == hashlib.sha256(FAST.read_bytes()).hexdigest()
    assert described["members"] is None
    assert described["metrics"]["test"]["accuracy"] == pytest.approx(metrics["accuracy"])


def test_the_readme_and_model_card_quote_its_own_figures(metrics: dict) -> None:
    quoted = (
        f"**fast choice: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}**"
    )
    for doc in (REPO_ROOT / "README.md", REPO_ROOT / "artifacts" / "MODEL_CARD.md"):
        assert quoted in doc.read_text(), f"{doc.name} does not quote {quoted}"
