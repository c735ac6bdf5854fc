"""A run's shipped weights -> `emotion.onnx` that the service can load without TensorFlow.

The exported graph is the whole shipped prediction: raw 0-255 pixels in, calibrated (and, if
validation chose it, flip-averaged) probabilities out. It carries the contract and its own
provenance in the ONNX metadata, and it is only written after onnxruntime has been shown to
agree with Keras on real faces, under a temporary name renamed into place, so an interrupted or
failed export never leaves a model where the service would load it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract.emotion import (
    CODE_VERSION_KEY,
    CONFIG_KEY,
    CREATED_KEY,
    DATASET_KEY,
    LABELS,
    METADATA_KEY,
    METRICS_KEY,
    QUANTIZATION_KEY,
    TRAINING_KEY,
    ModelContract,
)
from contract.provenance import code_version
from training.config import config_from_dict
from training.data import Dataset, Split
from training.errors import ExportError
from training.model import (
    as_images,
    calibrated_probabilities,
    load_float32_classifier,
    logits_model,
)
from training.quantize import QuantizationRecipe, check_quantized, quantize_int8
from training.run_dir import RUN_FILE, read_run_file, run_validation_split, shipped_weights

log = logging.getLogger(__name__)

MODEL_FILE = "emotion.onnx"
OUTPUT_NAME = "probabilities"
PARITY_TOLERANCE = 1e-4
"""Largest allowed difference between Keras and onnxruntime probabilities."""
PARITY_IMAGES = 64


def can_export() -> bool:
    """Whether this environment has the converter. A GPU machine running Keras on JAX does not:
    a run trained there is exported where TensorFlow is installed."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tf2onnx"))
    except (ImportError, ValueError):
        return False


def export_commands(run_dir: Path, data: Path) -> str:
    """The two commands that finish a run trained where it could not be exported."""
    return (
        f"python -m training export --run {run_dir}\n"
        f"python -m training evaluate --model {run_dir}/{MODEL_FILE} --data {data} "
        f"--out {run_dir} --stamp"
    )


def convert(classifier, temperature: float, flip_tta: bool, opset: int):
    """Trace the shipped prediction with TensorFlow and convert it with tf2onnx."""
    import tensorflow as tf
    import tf2onnx

    logits_fn = logits_model(classifier)
    signature = (tf.TensorSpec((None, *classifier.input_shape[1:]), tf.float32, name="image"),)

    @tf.function(input_signature=signature)
    def predict(images):
        return calibrated_probabilities(logits_fn, images, temperature, flip_tta)

    model_proto, _ = tf2onnx.convert.from_function(predict, input_signature=signature, opset=opset)
    _rename_output(model_proto, OUTPUT_NAME)
    keras_reference = lambda images: np.asarray(predict(images))  # noqa: E731
    return model_proto, keras_reference


def _rename_output(model_proto, name: str) -> None:
    """Give the graph's single output a name a reader recognises instead of `Identity:0`."""
    import onnx

    graph = model_proto.graph
    (output,) = graph.output
    graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
    output.name = name


def check_parity(model_bytes: bytes, keras_reference, images: np.ndarray) -> float:
    """Max |Keras - onnxruntime| over real faces; refuses the export above the tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    batch = as_images(images)
    expected = keras_reference(batch)
    actual = session.run([OUTPUT_NAME], {session.get_inputs()[0].name: batch})[0]
    if actual.shape != (len(batch), len(LABELS)):
        raise ExportError(
            f"the exported graph answers shape {actual.shape}, not (N, {len(LABELS)})"
        )
    difference = float(np.abs(expected - actual).max())
    if not np.isfinite(difference) or difference > PARITY_TOLERANCE:
        raise ExportError(
            f"parity check failed: onnxruntime and Keras differ by {difference:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}); the model was not written"
        )
    return difference


def set_metadata(model_proto, entries: dict[str, str]) -> None:
    existing = {prop.key: prop for prop in model_proto.metadata_props}
    for key, value in entries.items():
        if key in existing:
            existing[key].value = value
        else:
            model_proto.metadata_props.add(key=key, value=value)


def write_atomically(model_proto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(
            descriptor, 0o644
        )  # mkstemp makes it owner-only; the service may run as another user
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(model_proto.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_run(run_dir: Path) -> dict[str, Any]:
    """The record a training run keeps in its `run.json`."""
    record = read_run_file(run_dir)
    if not record:
        raise ExportError(f"{run_dir} is not a run directory: it has no {RUN_FILE}")
    return record


def run_dataset(run_dir: Path, data: Path | None = None) -> Dataset:
    """The data set a run was trained on, split exactly as the run split it.

    The validation faces drive the int8 check and the exported metadata, so they must be the
    run's own: the same fraction, seed and limit, from the same file (checked by sha256).
    """
    record = read_run(run_dir)
    data = Path(data) if data is not None else Path(record["data"]["source"])
    return run_validation_split(record).load(data)


def validation_accuracy(prediction: dict[str, Any]) -> float:
    return prediction[
        "validation_accuracy_flip" if prediction["flip_tta"] else "validation_accuracy_plain"
    ]


def export_run(
    run_dir: Path,
    out_dir: Path,
    parity: Split,
    validation: Split,
    crop_margin: float | None = None,
) -> Path:
    """Export `run_dir`'s best classifier to `out_dir/emotion.onnx`; returns that path.

    `parity` faces check the float graph against Keras; `validation` calibrates and checks the
    int8 graph when the config asks for one (never test/: quantisation is a choice).
    """

    record = read_run(run_dir)
    config = config_from_dict(record["config"])
    weights = shipped_weights(run_dir, config)
    if "prediction" not in record or not weights.exists():
        raise ExportError(f"{run_dir} has not finished training: run `train --resume` on it")
    prediction = record["prediction"]
    contract = ModelContract(
        crop_margin=crop_margin if crop_margin is not None else config.export.crop_margin
    )

    classifier = load_float32_classifier(config, weights)
    model_proto, keras_reference = convert(
        classifier, prediction["temperature"], prediction["flip_tta"], config.export.opset
    )
    set_metadata(
        model_proto,
        {
            METADATA_KEY: contract.to_json(),
            CONFIG_KEY: json.dumps(record["config"], sort_keys=True),
            DATASET_KEY: record["data"]["sha256"],
            CREATED_KEY: datetime.now(UTC).isoformat(timespec="seconds"),
            CODE_VERSION_KEY: code_version(),
            TRAINING_KEY: json.dumps(
                {
                    key: record.get(key)
                    for key in ("seed", "limit", "sessions", "fit_seconds", "teacher")
                }
                | {"prediction": prediction},
                sort_keys=True,
            ),
            # The shipped prediction's own accuracy (flip averaged or not, as chosen).
            METRICS_KEY: json.dumps({"validation": {"accuracy": validation_accuracy(prediction)}}),
        },
    )
    model_proto.producer_name = "emotion-training"
    difference = check_parity(
        model_proto.SerializeToString(), keras_reference, parity.x[:PARITY_IMAGES]
    )
    log.info(
        "parity: max |Keras - onnxruntime| = %.2e over %d faces",
        difference,
        len(parity.x[:PARITY_IMAGES]),
    )
    if config.export.quantize == "int8":
        model_proto = quantized(model_proto, validation)
    path = Path(out_dir) / MODEL_FILE
    write_atomically(model_proto, path)
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def quantized(float_proto, validation: Split):
    """The int8 version of `float_proto`, carrying its check against float in the metadata."""
    import onnx

    float_model = float_proto.SerializeToString()
    images = as_images(validation.x)
    recipe = QuantizationRecipe()
    int8_model = quantize_int8(float_model, images, recipe)
    report = check_quantized(float_model, int8_model, images, validation.y)
    log.info(
        "int8: validation accuracy %.4f (float %.4f), same answer on %.1f%% of %d faces",
        report["int8_accuracy"],
        report["float_accuracy"],
        100 * report["agreement"],
        report["faces"],
    )
    int8_proto = onnx.load_from_string(int8_model)
    int8_proto.producer_name = float_proto.producer_name
    set_metadata(
        int8_proto,
        {QUANTIZATION_KEY: json.dumps(report | {"type": "int8", "recipe": asdict(recipe)})},
    )
    return int8_proto


def stamp_metrics(model_path: Path, metrics: dict[str, Any]) -> None:
    """Add the test metrics to the model's own metadata, so `GET /model` can report them."""
    import onnx

    model_proto = onnx.load(str(model_path))
    carried = json.loads(
        {p.key: p.value for p in model_proto.metadata_props}.get(METRICS_KEY, "{}")
    )
    carried["test"] = {
        key: metrics[key]
        for key in (
            "split",
            "machine",
            "images",
            "accuracy",
            "macro_f1",
            "expected_calibration_error",
            "per_class",
        )
    }
    set_metadata(model_proto, {METRICS_KEY: json.dumps(carried, sort_keys=True)})
    write_atomically(model_proto, Path(model_path))
