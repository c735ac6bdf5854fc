"""Every answer the service gives, as pydantic models: they are the OpenAPI docs at /docs."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from contract.emotion import LABELS
from service.model_file import ModelFileState

Emotion = Literal["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
assert get_args(Emotion) == LABELS, "Emotion must list the contract's labels in order"


class DetectMode(StrEnum):
    """How `/predict` finds the faces in an image."""

    auto = "auto"
    """Find faces; when none is found, classify the whole image as one face."""
    always = "always"
    """Find faces; none found gives an empty list."""
    never = "never"
    """The image is already a face crop (as in FER2013): classify it whole."""


def _probability(label: str) -> Any:
    return Field(ge=0.0, le=1.0, description=f"Probability of '{label}'.")


class EmotionProbabilities(BaseModel):
    """One probability per emotion, in the model's label order; they sum to 1."""

    angry: float = _probability("angry")
    disgust: float = _probability("disgust")
    fear: float = _probability("fear")
    happy: float = _probability("happy")
    neutral: float = _probability("neutral")
    sad: float = _probability("sad")
    surprise: float = _probability("surprise")


assert tuple(EmotionProbabilities.model_fields) == LABELS


class Box(BaseModel):
    """A rectangle in pixels of the upright image (after EXIF rotation); x, y is its top-left."""

    x: int = Field(ge=0, examples=[177])
    y: int = Field(ge=0, examples=[67])
    width: int = Field(ge=1, examples=[93])
    height: int = Field(ge=1, examples=[93])


class Face(BaseModel):
    box: Box = Field(
        description="Where the face is: the detector's box, or the whole image when `detected` "
        "is false."
    )
    detected: bool = Field(
        description="True when the face detector found this face; false when the whole image "
        "was classified as one face (`detect=never`, or `detect=auto` with no face found)."
    )
    emotion: Emotion = Field(description="The most probable emotion.", examples=["happy"])
    confidence: float = Field(
        ge=0.0, le=1.0, description="The probability of `emotion`.", examples=[0.87]
    )
    probabilities: EmotionProbabilities


_PREDICTION_EXAMPLE = {
    "faces": [
        {
            "box": {"x": 177, "y": 67, "width": 93, "height": 93},
            "detected": True,
            "emotion": "happy",
            "confidence": 0.871204,
            "probabilities": {
                "angry": 0.010312,
                "disgust": 0.000451,
                "fear": 0.012039,
                "happy": 0.871204,
                "neutral": 0.071843,
                "sad": 0.020977,
                "surprise": 0.013174,
            },
        }
    ],
    "faces_found": 1,
    "width": 512,
    "height": 512,
    "model": "5f0c6e1d9a7b3c2e8d4f6a1b0c9e7d5a3b1f2e4c6d8a0b9c7e5f3a1d2c4b6e8f",
}


class Prediction(BaseModel):
    """The faces found in one image, largest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PREDICTION_EXAMPLE]})

    faces: list[Face]
    faces_found: int = Field(
        ge=0,
        description="How many faces the image has: what the detector found, or 1 when the whole "
        "image was classified. `faces` holds the largest `max_faces` of them (at most "
        "MAX_FACES_PER_IMAGE), so it is shorter when this is larger.",
        examples=[1],
    )
    width: int = Field(description="Width of the upright image, in pixels.")
    height: int = Field(description="Height of the upright image, in pixels.")
    model: str = Field(description="Id of the model that answered: sha256 of its ONNX file.")


class FileError(BaseModel):
    """A file of a batch that could not be used; the other files are answered as usual."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "the file is not a supported image: send JPEG, PNG, WebP, BMP or "
                    "TIFF",
                    "status": 415,
                }
            ]
        }
    )

    detail: str = Field(description="What is wrong with the file and what to send instead.")
    status: int = Field(description="The HTTP status `/predict` would answer for this file alone.")


class BatchPrediction(BaseModel):
    results: list[Prediction | FileError] = Field(
        description="One entry per uploaded file, in upload order."
    )


class ErrorDetail(BaseModel):
    """Every client mistake is answered with a 4xx status and this body."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "the uploaded file is empty"}]}
    )

    detail: str | list[dict[str, Any]] = Field(
        description="What went wrong and what to do about it; for parameter errors (422) a list "
        "of the invalid fields, as FastAPI reports them."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "loading", "stopping"] = Field(
        description="`loading` before the model is warm, `stopping` from the shutdown signal on.",
        examples=["ready"],
    )
    model: str | None = Field(
        description="Id of the loaded model, once it has answered its warm-up inference."
    )


class ContractInfo(BaseModel):
    """How faces are prepared for the model, as the model's own metadata says."""

    input_size: int = Field(examples=[48])
    pixel_scale: float = Field(examples=[1.0])
    crop_margin: float = Field(examples=[1.0])
    version: int = Field(examples=[1])


class EnsembleMemberInfo(BaseModel):
    """One network of an ensemble: its answers are weighted by `weight` inside the one graph."""

    id: str = Field(description="sha256 of the member's own exported ONNX file.")
    name: str | None = Field(
        description="The member's name: the folder it was built from, as the model card calls "
        "it; null in ensembles built before names were recorded.",
        examples=["fresh120"],
    )
    weight: float = Field(description="Its share of the ensemble's average.", examples=[0.5])
    validation_accuracy: float | None = Field(
        description="The member's own accuracy on the validation faces that chose the weights.",
        examples=[0.699],
    )


class ModelInfo(BaseModel):
    id: str = Field(description="sha256 of the ONNX file.")
    labels: list[Emotion] = Field(description="The emotions, in the model's output order.")
    input_shape: list[int | None] = Field(
        description="Shape of the model input, NHWC; the batch dimension is null (dynamic).",
        examples=[[None, 48, 48, 1]],
    )
    contract: ContractInfo
    metrics: dict[str, Any] | None = Field(
        description="Evaluation metrics that training wrote into the artifact; null if none.",
        examples=[{"test_accuracy": 0.68, "test_macro_f1": 0.66}],
    )
    training_config: dict[str, Any] | None = Field(
        description="The training configuration recorded in the artifact; null if none."
    )
    dataset_sha256: str | None = Field(description="sha256 of the training data, if recorded.")
    created: str | None = Field(description="When the artifact was exported, if recorded.")
    code_version: str | None = Field(description="Code version that trained it, if recorded.")
    file_on_disk: ModelFileState = Field(
        description="Whether MODEL_PATH still holds the file served: `unchanged`, `replaced` "
        "(other bytes) or `missing`. The service keeps serving the model it loaded at start "
        "either way; a restart loads (or fails on) what is there now.",
        examples=["unchanged"],
    )
    members: list[EnsembleMemberInfo] | None = Field(
        default=None,
        description="The networks an ensemble averages, with their weights; null for one network.",
    )
