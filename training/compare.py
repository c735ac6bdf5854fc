"""Rank exported models on the validation faces none of them trained on: which one to ship.

`test/` scores the shipped model once, for its card; choosing between models there would tune the
shipped one toward test. Each run carves its validation split from `train/` with its own seed,
fraction and limit, so models are compared only when those and the data file match: otherwise
one model's validation faces were another's training faces, and the comparison would flatter it.

The ONNX files themselves are scored, int8 graph, temperature and flip averaging included, through
the service's own model class: the answer is about what would be served. Models rank by accuracy,
then by negative log-likelihood (the better-calibrated of two equally accurate models), and each
is set against the best with McNemar's exact test on the faces where exactly one of the two is
right, so a difference of a few faces is not mistaken for progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.model import CONFIG_KEY, DATASET_KEY, TRAINING_KEY, EmotionModel
from training.data import Dataset, load_dataset
from training.errors import CompareError
from training.evaluate import classification_metrics, load_model

NOISE_LEVEL = 0.05
"""p-value of McNemar's test above which a difference is reported as within noise."""


@dataclass(frozen=True)
class ValidationSplit:
    """What decides which faces a run held out: equal for two models, equal faces."""

    dataset_sha256: str
    seed: int
    fraction: float
    limit: int | None

    def describe(self) -> str:
        limit = f"at most {self.limit} a class" if self.limit else "all images"
        return f"seed {self.seed}, fraction {self.fraction}, {limit}"


@dataclass(frozen=True)
class Score:
    path: Path
    model_id: str
    accuracy: float
    macro_f1: float
    nll: float
    ece: float
    correct: np.ndarray
    """Per validation face, whether the model's top answer is its label (for McNemar)."""


@dataclass(frozen=True)
class Difference:
    """A model against the best: faces only the best gets right, only it gets right, p-value."""

    only_best: int
    only_this: int
    p_value: float


def validation_split_of(model: EmotionModel) -> ValidationSplit:
    """The split a model was validated on, from the record its export wrote into it."""
    metadata = model.session.get_modelmeta().custom_metadata_map
    try:
        training = json.loads(metadata[TRAINING_KEY])
        config = json.loads(metadata[CONFIG_KEY])
        return ValidationSplit(
            dataset_sha256=metadata[DATASET_KEY],
            seed=int(training["seed"]),
            fraction=float(config["train"]["validation_fraction"]),
            limit=training.get("limit"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CompareError(
            f"{model.path} does not record the validation split it was chosen on ({error!r} is "
            "missing): export it again with `python -m training export --run DIR`"
        ) from error


def common_split(models: list[EmotionModel]) -> ValidationSplit:
    splits = {model.path: validation_split_of(model) for model in models}
    first, split = next(iter(splits.items()))
    for path, other in splits.items():
        if other != split:
            raise CompareError(
                f"{first} was validated on other faces than {path} ({split.describe()} against "
                f"{other.describe()}, data sha256 {split.dataset_sha256[:12]}… against "
                f"{other.dataset_sha256[:12]}…): one model's validation faces were the other's "
                "training faces, so comparing them there would flatter it. Compare runs trained "
                "on the same data with the same seed, validation_fraction and --limit."
            )
    return split


def split_data(split: ValidationSplit, data: Path) -> Dataset:
    """`data` split as the models' runs split it, after checking it is the data they recorded."""
    dataset = load_dataset(data, split.fraction, split.seed, split.limit)
    if dataset.sha256 != split.dataset_sha256:
        raise CompareError(
            f"{data} is not the data set these models were trained on (sha256 "
            f"{dataset.sha256[:12]}…, they record {split.dataset_sha256[:12]}…): its validation "
            "split would not be theirs. Pass the data they were trained on."
        )
    return dataset


def score(model: EmotionModel, faces: np.ndarray, labels: np.ndarray) -> Score:
    probabilities = model.predict(faces).astype(np.float64)
    metrics = classification_metrics(probabilities, labels)
    chosen = probabilities[np.arange(len(labels)), labels]
    return Score(
        path=model.path,
        model_id=model.model_id,
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        nll=float(-np.log(np.maximum(chosen, 1e-12)).mean()),
        ece=metrics["expected_calibration_error"],
        correct=probabilities.argmax(axis=1) == labels,
    )


def mcnemar(best: Score, other: Score) -> Difference:
    """Exact McNemar: if the two were equally accurate, each face only one of them gets right
    would be a fair coin's toss between them."""
    from scipy.stats import binomtest

    only_best = int((best.correct & ~other.correct).sum())
    only_this = int((other.correct & ~best.correct).sum())
    disagreements = only_best + only_this
    p_value = binomtest(only_best, disagreements).pvalue if disagreements else 1.0
    return Difference(only_best, only_this, float(p_value))


def compare(paths: list[Path], data: Path) -> tuple[ValidationSplit, list[Score]]:
    """The models' common validation split and their scores on it, best first."""
    if len({path.resolve() for path in paths}) != len(paths):
        raise CompareError("a model is named twice")
    models = [load_model(path) for path in paths]
    split = common_split(models)
    validation = split_data(split, data).validation
    scores = [score(model, validation.x, validation.y) for model in models]
    return split, sorted(scores, key=lambda s: (-s.accuracy, s.nll))


def report(split: ValidationSplit, scores: list[Score]) -> str:
    faces = len(scores[0].correct)
    lines = [
        f"validation: {faces} faces carved from train/ ({split.describe()}), "
        "which none of these models trained on",
        "",
        f"{'rank':<5}{'accuracy':>9}{'macro-F1':>10}{'NLL':>8}{'ECE':>8}  {'id':<13} model",
    ]
    for rank, s in enumerate(scores, start=1):
        lines.append(
            f"{rank:<5}{s.accuracy:>9.4f}{s.macro_f1:>10.4f}{s.nll:>8.4f}{s.ece:>8.4f}  "
            f"{s.model_id[:12]:<13} {s.path}"
        )
    best = scores[0]
    for rank, other in enumerate(scores[1:], start=2):
        d = mcnemar(best, other)
        verdict = "within noise" if d.p_value > NOISE_LEVEL else "a real difference"
        lines.append(
            f"1 against {rank}: only 1 is right on {d.only_best} faces, only {rank} on "
            f"{d.only_this}; McNemar exact p = {d.p_value:.3f}: {verdict}"
        )
    return "\n".join(lines)
