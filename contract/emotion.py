"""The contract between training and serving, written once and carried inside the model.

Training writes a `ModelContract` into the ONNX file's metadata; the service reads it back at
start-up and preprocesses faces exactly as the model was trained, so the two halves cannot drift
apart. This module is pure Python (no numpy, no onnx) so that both sides can import it cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
"""The seven FER2013 emotions, in the order of the model's output vector."""

INPUT_SIZE = 48
"""FER2013 face crops are 48x48 grayscale."""

METADATA_KEY = "emotion_contract"
"""ONNX `metadata_props` key holding the contract as JSON."""

# The artifact's provenance, beside the contract: written by training's export, reported by the
# service (`GET /model`), and read by the tools that choose between models (`training compare`).
METRICS_KEY = "emotion_metrics"
CONFIG_KEY = "emotion_config"
DATASET_KEY = "emotion_dataset_sha256"
CREATED_KEY = "emotion_created"
CODE_VERSION_KEY = "emotion_code_version"
TRAINING_KEY = "emotion_training"
QUANTIZATION_KEY = "emotion_quantization"
ENSEMBLE_KEY = "emotion_ensemble"
"""An ensemble's members (ids, weights, validation figures) and the validation split that chose
them; absent from a single model."""

CONTRACT_VERSION = 1


class ContractError(ValueError):
    """The model artifact does not carry a contract this code can honour."""


class ModelError(RuntimeError):
    """The model artifact cannot be served; the message says why and what to do.

    Here rather than beside the model class so that training's command line can report it as
    one line without importing onnxruntime (a JAX training machine need not have it)."""


@dataclass(frozen=True)
class ModelContract:
    """How a face must be cut out and fed to the model.

    - `labels`: names of the output probabilities, in order.
    - `input_size`: side of the square grayscale crop; the graph input is
      `[batch, input_size, input_size, 1]` float32 (NHWC).
    - `pixel_scale`: factor applied to 0-255 pixel values before they enter the graph. The
      shipped models rescale inside the graph, so this is 1.0 (the graph takes raw pixels).
    - `crop_margin`: a face detector's square box is scaled by this factor around its centre
      before cropping, so that the crop frames the face the way FER2013's crops do.
    """

    labels: tuple[str, ...] = LABELS
    input_size: int = INPUT_SIZE
    pixel_scale: float = 1.0
    crop_margin: float = 1.0
    version: int = field(default=CONTRACT_VERSION)

    def __post_init__(self) -> None:
        problems = []
        if tuple(self.labels) != LABELS:
            problems.append(f"labels must be {list(LABELS)} in that order, got {list(self.labels)}")
        if self.input_size != INPUT_SIZE:
            problems.append(f"input_size must be {INPUT_SIZE}, got {self.input_size}")
        if not (0 < self.pixel_scale <= 1.0):
            problems.append(f"pixel_scale must be in (0, 1], got {self.pixel_scale}")
        if not (0.5 <= self.crop_margin <= 3.0):
            problems.append(f"crop_margin must be in [0.5, 3.0], got {self.crop_margin}")
        if self.version != CONTRACT_VERSION:
            problems.append(f"contract version {self.version} is not {CONTRACT_VERSION}")
        if problems:
            raise ContractError("; ".join(problems))

    @property
    def input_shape(self) -> tuple[None, int, int, int]:
        """Shape of the graph input; the batch dimension is dynamic."""
        return (None, self.input_size, self.input_size, 1)

    def to_json(self) -> str:
        payload = asdict(self)
        payload["labels"] = list(self.labels)
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise ContractError(f"contract metadata is not valid JSON: {error}") from error
        if not isinstance(payload, dict):
            raise ContractError("contract metadata must be a JSON object")
        unknown = set(payload) - {"labels", "input_size", "pixel_scale", "crop_margin", "version"}
        if unknown:
            raise ContractError(f"contract metadata has unknown keys: {sorted(unknown)}")
        try:
            return cls(
                labels=tuple(payload["labels"]),
                input_size=int(payload["input_size"]),
                pixel_scale=float(payload["pixel_scale"]),
                crop_margin=float(payload["crop_margin"]),
                version=int(payload.get("version", CONTRACT_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ContractError):
                raise
            raise ContractError(
                f"contract metadata is incomplete or mistyped: {error!r}"
            ) from error

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ModelContract:
        """Read the contract from an ONNX model's custom metadata map."""
        if METADATA_KEY not in metadata:
            raise ContractError(
                f"the model carries no '{METADATA_KEY}' metadata: it was not exported by "
                "`python -m training export`"
            )
        return cls.from_json(metadata[METADATA_KEY])
