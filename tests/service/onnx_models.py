"""Small but real ONNX emotion models for the tests, built with `onnx.helper` (no TensorFlow).

The graph does what a trained one does at its edges: it takes `[N, 48, 48, 1]` raw pixels,
rescales them inside, and answers seven softmax probabilities that depend on the picture (8x8
average pooling, then fixed random weights). Its arguments build the broken models that the
service must refuse. Also a command, to drop a stand-in model where `make serve` looks for one:

    .venv/bin/python -m tests.service.onnx_models artifacts/emotion.onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.emotion import LABELS, METADATA_KEY, ModelContract

TEST_METRICS = {"test_accuracy": 0.5, "test_macro_f1": 0.4}
_POOL = 8


def build_emotion_model(
    path: Path,
    *,
    contract: str | None = ModelContract().to_json(),
    metadata: dict[str, str] | None = None,
    input_size: int = 48,
    channels: int = 1,
    batch: int | str = "batch",
    labels: int = len(LABELS),
    softmax: bool = True,
    seed: int = 0,
) -> Path:
    """Write the model to `path` and return it. `contract=None` leaves the contract out;
    `metadata=None` adds the training metadata a real export carries."""
    cells = (input_size // _POOL) ** 2 * channels
    weights = np.random.default_rng(seed).normal(0.0, 1.0, (cells, labels)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["unit"]),
        helper.make_node("Sub", ["unit", "half"], ["scaled"]),
        helper.make_node(
            "AveragePool",
            ["scaled"],
            ["pooled"],
            kernel_shape=[_POOL, _POOL],
            strides=[_POOL, _POOL],
        ),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "weights"], ["logits"]),
    ]
    nodes.append(
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)
        if softmax
        else helper.make_node("Identity", ["logits"], ["probabilities"])
    )
    graph = helper.make_graph(
        nodes,
        "test_emotion_cnn",
        [
            helper.make_tensor_value_info(
                "pixels", TensorProto.FLOAT, [batch, input_size, input_size, channels]
            )
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, labels])],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
            numpy_helper.from_array(weights, "weights"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is None:
        metadata = {
            "emotion_metrics": json.dumps(TEST_METRICS),
            "emotion_config": json.dumps({"epochs": 1, "note": "built by the tests"}),
            "emotion_dataset_sha256": "0" * 64,
            "emotion_created": "2026-01-01T00:00:00Z",
            "emotion_code_version": "test",
        }
    if contract is not None:
        metadata = {**metadata, METADATA_KEY: contract}
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a stand-in emotion model (untrained).")
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    print(build_emotion_model(args.path))


if __name__ == "__main__":
    main()
