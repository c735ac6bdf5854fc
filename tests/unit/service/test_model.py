"""The onnxruntime session: what it answers, and every model it refuses to serve."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from contract.emotion import LABELS, ModelContract
from service.model import EmotionModel, ModelError
from tests.fixtures.onnx_models import TEST_METRICS, build_emotion_model


@pytest.fixture(scope="module")
def model(model_path) -> EmotionModel:
    return EmotionModel.load(model_path)


def test_loads_contract_id_and_training_record(model, model_path):
    assert model.model_id == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert model.contract == ModelContract()
    assert model.labels == LABELS
    assert model.training.metrics == TEST_METRICS
    assert model.training.created == "2026-01-01T00:00:00Z"
    assert model.input_name == "pixels" and model.output_name == "probabilities"


def test_predicts_one_distribution_per_crop_that_depends_on_the_crop(model):
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probabilities = model.predict(crops)
    assert probabilities.shape == (5, len(LABELS))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probabilities >= 0)
    assert not np.allclose(probabilities[0], probabilities[1])
    one_by_one = np.concatenate([model.predict(crops[i : i + 1]) for i in range(5)])
    assert np.allclose(one_by_one, probabilities, atol=1e-6)  # batching changes nothing


def test_a_batch_over_max_batch_is_run_in_slices_with_the_same_answers(model_path):
    crops = np.random.default_rng(2).integers(0, 256, (7, 48, 48), dtype=np.uint8)
    whole = EmotionModel.load(model_path).predict(crops)
    sliced = EmotionModel.load(model_path, max_batch=3)
    calls = []
    real_run = sliced.session.run

    class CountingSession:
        def run(self, outputs, feeds):
            calls.append(len(next(iter(feeds.values()))))
            return real_run(outputs, feeds)

    sliced.session = CountingSession()
    assert np.allclose(sliced.predict(crops), whole, atol=1e-6)
    assert calls == [3, 3, 1]


def test_empty_batch_needs_no_inference(model):
    assert model.predict(np.empty((0, 48, 48), np.uint8)).shape == (0, len(LABELS))


def test_missing_training_metadata_is_reported_as_absent(tmp_path):
    path = build_emotion_model(tmp_path / "m.onnx", metadata={})
    assert EmotionModel.load(path).training.metrics is None
    path = build_emotion_model(tmp_path / "m.onnx", metadata={"emotion_metrics": "{not json"})
    assert EmotionModel.load(path).training.metrics is None


def refusal(path) -> str:
    with pytest.raises(ModelError) as caught:
        EmotionModel.load(path)
    return str(caught.value)


def test_refuses_a_missing_file_and_says_how_to_get_one(tmp_path):
    message = refusal(tmp_path / "nowhere.onnx")
    assert "no model file" in message
    assert "python -m training train" in message
    assert "artifacts/emotion.onnx" in message and "MODEL_PATH" in message


@pytest.mark.parametrize("content", [b"", b"definitely not a protobuf \x00\xff" * 50])
def test_refuses_a_file_that_is_not_an_onnx_model(tmp_path, content):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(content)
    assert "not a model onnxruntime can load" in refusal(path)


def test_refuses_a_truncated_model(tmp_path, model_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(model_path.read_bytes()[:300])
    assert "not a model onnxruntime can load" in refusal(path)


def test_refuses_a_model_without_contract(tmp_path):
    message = refusal(build_emotion_model(tmp_path / "m.onnx", contract=None))
    assert "no 'emotion_contract' metadata" in message


@pytest.mark.parametrize(
    ("contract", "expected"),
    [
        ("{broken", "not valid JSON"),
        (
            json.dumps({"labels": ["a"], "input_size": 48, "pixel_scale": 1, "crop_margin": 1}),
            "labels must be",
        ),
        (json.dumps({"labels": list(LABELS)}), "incomplete"),
        (json.dumps({**json.loads(ModelContract().to_json()), "pixel_scale": 0}), "pixel_scale"),
    ],
)
def test_refuses_an_unreadable_contract(tmp_path, contract, expected):
    assert expected in refusal(build_emotion_model(tmp_path / "m.onnx", contract=contract))


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"input_size": 64}, "the contract says [batch, 48, 48, 1]"),
        ({"channels": 3}, "the contract says [batch, 48, 48, 1]"),
        ({"labels": 5}, "the contract's 7 labels need [batch, 7]"),
        ({"batch": 1}, "fixed batch of 1"),
        ({"softmax": False}, "not probabilities"),
    ],
)
def test_refuses_a_graph_inconsistent_with_its_contract(tmp_path, graph, expected):
    assert expected in refusal(build_emotion_model(tmp_path / "m.onnx", **graph))
