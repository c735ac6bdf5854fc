"""The onnxruntime session: 48x48 grayscale crops -> emotion probabilities, batched.

`EmotionModel.load` is the only way in, and it refuses a model the service cannot serve
faithfully: a missing or unreadable file, no contract in the metadata, a graph whose input or
output does not match the contract, or outputs that are not probabilities. The error message says
what is wrong and how to get a good model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from contract.emotion import (
    CODE_VERSION_KEY,
    CONFIG_KEY,
    CREATED_KEY,
    DATASET_KEY,
    ENSEMBLE_KEY,
    METRICS_KEY,
    ContractError,
    ModelContract,
    ModelError,
)
from contract.runtime import model_session_options

log = logging.getLogger(__name__)


HOW_TO_GET_A_MODEL = (
    "train one with `python -m training train` (it writes artifacts/emotion.onnx), copy an "
    "exported model to artifacts/emotion.onnx, or point MODEL_PATH at one"
)

_PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class TrainingRecord:
    """What training wrote about itself into the artifact; every part may be absent."""

    metrics: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    dataset_sha256: str | None = None
    created: str | None = None
    code_version: str | None = None
    members: tuple[EnsembleMember, ...] | None = None
    """An ensemble's members (`python -m training ensemble`); None for a single network."""


@dataclass(frozen=True)
class EnsembleMember:
    """One network inside an ensemble, as the ensemble's metadata lists it."""

    id: str
    """sha256 of the member's own exported file."""
    name: str | None
    """The folder it was built from (`training/members/NAME` or `training/candidates/NAME`);
    None in files built before names were recorded."""
    weight: float
    validation_accuracy: float | None


@dataclass
class EmotionModel:
    path: Path
    model_id: str
    """sha256 of the ONNX file, hex: the same file always has the same id."""
    contract: ModelContract
    training: TrainingRecord
    session: ort.InferenceSession = field(repr=False)
    input_name: str
    output_name: str
    max_batch: int = 512
    """Most crops per onnxruntime call: a larger batch is run in slices of this size, so that a
    pathological request (32 files x 100 faces) cannot take gigabytes of activations at once."""

    @classmethod
    def load(cls, path: Path, *, intra_op_threads: int = 0, max_batch: int = 512) -> EmotionModel:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"no model file at {path}: {HOW_TO_GET_A_MODEL}")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ModelError(f"cannot read the model at {path}: {error}") from error

        options = model_session_options()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Idle threads that spin after each run take the CPU from the next request's decoding
        # and detection (docs/experiments.md, "Serving threads").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ModelError(
                f"{path} is not a model onnxruntime can load ({error}); {HOW_TO_GET_A_MODEL}"
            ) from error

        metadata = session.get_modelmeta().custom_metadata_map
        try:
            contract = ModelContract.from_metadata(metadata)
        except ContractError as error:
            raise ModelError(f"{path}: {error}; {HOW_TO_GET_A_MODEL}") from error
        input_name, output_name = _check_graph(session, contract, path)

        model = cls(
            path=path,
            model_id=hashlib.sha256(data).hexdigest(),
            contract=contract,
            training=_training_record(metadata),
            session=session,
            input_name=input_name,
            output_name=output_name,
            max_batch=max_batch,
        )
        model.warm_up()
        return model

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """`crops` `(n, size, size)` uint8 -> `(n, labels)` float32 probabilities: one
        onnxruntime call for up to `max_batch` crops."""
        count = len(crops)
        size = self.contract.input_size
        if crops.shape[1:] != (size, size):
            raise ValueError(f"crops must be {size}x{size}, got {crops.shape[1:]}")
        answers = [np.empty((0, len(self.labels)), dtype=np.float32)]
        for start in range(0, count, self.max_batch):
            chunk = crops[start : start + self.max_batch]
            batch = chunk.astype(np.float32).reshape(len(chunk), size, size, 1)
            batch *= self.contract.pixel_scale
            (probabilities,) = self.session.run([self.output_name], {self.input_name: batch})
            answers.append(np.asarray(probabilities, dtype=np.float32))
        return np.concatenate(answers)

    def warm_up(self) -> None:
        """Run a batch of two crops; refuse a graph whose answer is not one distribution each.

        Two, not one, so a graph that cannot take a dynamic batch fails now rather than on the
        first `/predict/batch`.
        """
        size = self.contract.input_size
        gradient = (np.arange(size * size) % 256).reshape(size, size)
        crops = np.stack([np.full((size, size), 128), gradient]).astype(np.uint8)
        try:
            probabilities = self.predict(crops)
        except Exception as error:
            raise ModelError(f"{self.path}: the warm-up inference failed: {error}") from error
        expected = (2, len(self.labels))
        if probabilities.shape != expected:
            raise ModelError(
                f"{self.path}: the model answered shape {probabilities.shape} for 2 crops, "
                f"expected {expected} (one probability per label)"
            )
        sums = probabilities.sum(axis=1)
        if (
            not np.all(np.isfinite(probabilities))
            or np.any(probabilities < -_PROBABILITY_TOLERANCE)
            or np.any(np.abs(sums - 1.0) > _PROBABILITY_TOLERANCE)
        ):
            raise ModelError(
                f"{self.path}: the model's outputs are not probabilities (row sums {sums.tolist()})"
                ": export it with the softmax inside the graph"
            )


def _check_graph(
    session: ort.InferenceSession, contract: ModelContract, path: Path
) -> tuple[str, str]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if len(inputs) != 1 or len(outputs) != 1:
        problems.append(
            f"the graph must have one input and one output, it has {len(inputs)} and {len(outputs)}"
        )
    else:
        graph_input, graph_output = inputs[0], outputs[0]
        size = contract.input_size
        shape = list(graph_input.shape)
        if len(shape) != 4 or shape[1:] != [size, size, 1]:
            problems.append(
                f"input '{graph_input.name}' has shape {shape}, the contract says "
                f"[batch, {size}, {size}, 1]"
            )
        elif isinstance(shape[0], int) and shape[0] > 0:
            problems.append(
                f"input '{graph_input.name}' has a fixed batch of {shape[0]}; it must be dynamic"
            )
        if graph_input.type != "tensor(float)":
            problems.append(f"input '{graph_input.name}' is {graph_input.type}, not float32")
        out_shape = list(graph_output.shape)
        labels = len(contract.labels)
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != labels):
            problems.append(
                f"output '{graph_output.name}' has shape {out_shape}, the contract's "
                f"{labels} labels need [batch, {labels}]"
            )
        if graph_output.type != "tensor(float)":
            problems.append(f"output '{graph_output.name}' is {graph_output.type}, not float32")
    if problems:
        raise ModelError(f"{path} does not match its contract: " + "; ".join(problems))
    return inputs[0].name, outputs[0].name


def _training_record(metadata: dict[str, str]) -> TrainingRecord:
    return TrainingRecord(
        metrics=_json_object(metadata, METRICS_KEY),
        config=_json_object(metadata, CONFIG_KEY),
        dataset_sha256=metadata.get(DATASET_KEY),
        created=metadata.get(CREATED_KEY),
        code_version=metadata.get(CODE_VERSION_KEY),
        members=_ensemble_members(metadata),
    )


def _ensemble_members(metadata: dict[str, str]) -> tuple[EnsembleMember, ...] | None:
    """The members an ensemble lists; informational, so a malformed list is logged and absent."""
    ensemble = _json_object(metadata, ENSEMBLE_KEY)
    if ensemble is None:
        return None
    try:
        return tuple(
            EnsembleMember(
                id=str(member["id"]),
                name=_optional_str(member.get("name")),
                weight=_finite(member["weight"]),
                validation_accuracy=_optional_float(
                    (member.get("validation") or {}).get("accuracy")
                ),
            )
            for member in ensemble["members"]
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        log.warning("model metadata '%s' lists no readable members (%r)", ENSEMBLE_KEY, error)
        return None


def _optional_float(value: Any) -> float | None:
    return None if value is None else _finite(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite(value: Any) -> float:
    """A number JSON can carry back to a client (NaN and infinities cannot)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _json_object(metadata: dict[str, str], key: str) -> dict[str, Any] | None:
    """Informational metadata: unreadable JSON is logged and reported as absent, not fatal."""
    if key not in metadata:
        return None
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as error:
        log.warning(
            "model metadata '%s' is not valid JSON (%s); reporting it as absent", key, error
        )
        return None
    if not isinstance(value, dict):
        log.warning("model metadata '%s' is not a JSON object; reporting it as absent", key)
        return None
    return value
