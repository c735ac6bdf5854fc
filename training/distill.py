"""Knowledge distillation: train on a mix of the labels and an earlier model's probabilities.

FER2013's labels are noisy (about one face in ten is arguably mislabelled) and hard: a fear face
labelled only "fear" teaches nothing about how close it is to surprise. An exported model's
calibrated probabilities on the same training faces carry that ("dark knowledge", Hinton et al.,
2015); a network of the same size trained towards them can beat its teacher (Furlanello et al.,
2018: born-again networks). The teacher is an exported ONNX model, run once over the training
faces with onnxruntime, so distillation costs seconds and no backend-specific code.

The teacher must have been validated on the very faces this run holds out: one that trained on
them would leak their labels into this run's targets and flatter its validation accuracy, the
only figure a run is chosen on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.emotion import ModelError
from service.model import EmotionModel
from training.data import Split, ValidationSplit
from training.errors import CompareError, TeacherError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Teacher:
    path: Path
    model_id: str
    """sha256 of the teacher's file: a run records it, so that a resumed session (or a reader of
    the exported model) knows which model taught it, whatever sits at `path` later."""
    probabilities: np.ndarray
    """One row per training face, in the order of the run's training split."""
    label_agreement: float

    def record(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "model_id": self.model_id,
            "label_agreement": round(self.label_agreement, 4),
        }


def load_teacher(path: Path, train: Split, split: ValidationSplit) -> Teacher:
    """The teacher at `path` and its probabilities for each training face, refused unless it was
    validated on `split`, the faces this run holds out."""
    from training.compare import validation_split_of

    try:
        model = EmotionModel.load(path)
        teacher_split = validation_split_of(model)
    except (ModelError, CompareError) as error:
        raise TeacherError(f"train.teacher: {error}") from error
    if teacher_split != split:
        raise TeacherError(
            f"train.teacher {path} held out other faces ({teacher_split.describe()}, data "
            f"sha256 {teacher_split.dataset_sha256[:12]}…) than this run "
            f"({split.describe()}, {split.dataset_sha256[:12]}…): it trained on some of this "
            "run's validation faces, so it would leak their labels. Distil from a model trained "
            "on the same data file with the same train.split_seed, validation_fraction and --limit."
        )
    probabilities = model.predict(train.x)
    teacher = Teacher(
        path=path,
        model_id=model.model_id,
        probabilities=probabilities,
        label_agreement=float((probabilities.argmax(1) == train.y).mean()),
    )
    log.info(
        "teacher %s (id %s…): agrees with %.1f %% of the %d training labels",
        path,
        teacher.model_id[:12],
        100 * teacher.label_agreement,
        len(train.y),
    )
    return teacher


def distilled_targets(one_hot: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * one-hot labels + weight * teacher probabilities, one row per face.

    Cross-entropy against this mix is the label loss plus `weight` times the distillation loss
    at temperature 1: the teacher is already calibrated, so no extra temperature is needed.
    """
    mixed = (1.0 - weight) * one_hot + weight * teacher.astype(np.float32)
    return mixed / mixed.sum(axis=1, keepdims=True)
