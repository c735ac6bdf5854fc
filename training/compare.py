"""Rank exported models on held-out validation faces: which one to ship.

`test/` scores the shipped model once, for its card; choosing between models there would tune the
shipped one toward test. Each run carves its validation split from `train/` with its own seed,
fraction and limit, so models are compared only when those and the data file match: otherwise
one model's validation faces were another's training faces, and the comparison would flatter it.
Validation faces that are pixel copies of a training face are left out too (FER2013 has 7-8 %
of them): they reward memory, and users never send them. The same faces also chose each run's
epoch, temperature and flip averaging, a small optimism every run shares.

The ONNX files themselves are scored, int8 graph, temperature and flip averaging included, through
the service's own model class: the answer is about what would be served. Models rank by accuracy,
then by negative log-likelihood (the better-calibrated of two equally accurate models), and each
is set against the best on the faces where exactly one of the two is right: McNemar's exact test
and a 95 % interval for the gap, so a difference of a few faces is not mistaken for progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.emotion import CONFIG_KEY, DATASET_KEY, ENSEMBLE_KEY, TRAINING_KEY
from service.model import EmotionModel
from training.data import Split, ValidationSplit, copies_of
from training.errors import CompareError
from training.evaluate import classification_metrics, load_model

SIGNIFICANCE_LEVEL = 0.05
"""McNemar p-value at or below which a gap is reported as a real difference."""
Z_95 = 1.96


@dataclass(frozen=True)
class Score:
    path: Path
    model_id: str
    accuracy: float
    macro_f1: float
    nll: float
    ece: float
    correct: np.ndarray
    """Per compared face, whether the model's top answer is its label (for McNemar)."""
    members: int | None = None
    """Networks in an ensemble (`python -m training ensemble`); None for a single network."""


@dataclass(frozen=True)
class Comparison:
    split: ValidationSplit
    copies_left_out: int
    scores: list[Score]
    """Best first."""


@dataclass(frozen=True)
class Difference:
    """A model against the best, on the faces where exactly one of the two is right."""

    only_best: int
    only_this: int
    gap: float
    """The best's accuracy minus this one's."""
    margin: float
    """Half-width of the 95 % interval for `gap` (paired, normal approximation)."""
    p_value: float


def validation_split_of(model: EmotionModel) -> ValidationSplit:
    """The split a model was validated on, from the record its export wrote into it."""
    metadata = model.session.get_modelmeta().custom_metadata_map
    if ENSEMBLE_KEY in metadata:
        return ensemble_split(model, metadata[ENSEMBLE_KEY])
    missing = [key for key in (TRAINING_KEY, CONFIG_KEY, DATASET_KEY) if key not in metadata]
    if missing:
        raise CompareError(
            f"{model.path} does not record the validation split it was chosen on (no "
            f"{', '.join(missing)} metadata): export its run again with "
            "`python -m training export --run DIR`"
        )
    try:
        training, config = json.loads(metadata[TRAINING_KEY]), json.loads(metadata[CONFIG_KEY])
        split = ValidationSplit.recorded(metadata[DATASET_KEY], config, training)
    except (ValueError, KeyError, TypeError) as error:
        raise CompareError(
            f"{model.path}: its training record is unreadable ({error!r})"
        ) from error
    well_typed = (
        isinstance(split.seed, int)
        and isinstance(split.fraction, float)
        and (split.limit is None or isinstance(split.limit, int))
    )
    if not well_typed:
        raise CompareError(f"{model.path}: its training record is unreadable ({split})")
    return split


def ensemble_split(model: EmotionModel, recorded: str) -> ValidationSplit:
    """The split an ensemble's members shared, which chose its weights."""
    try:
        split = ValidationSplit(**json.loads(recorded)["split"])
    except (ValueError, KeyError, TypeError) as error:
        raise CompareError(
            f"{model.path}: its ensemble record is unreadable ({error!r})"
        ) from error
    return split


def common_split(models: list[EmotionModel]) -> ValidationSplit:
    first, split = models[0].path, validation_split_of(models[0])
    for model in models[1:]:
        other = validation_split_of(model)
        if other != split:
            raise CompareError(
                f"{first} was validated on other faces than {model.path} ({split.describe()} "
                f"against {other.describe()}; data sha256 {split.dataset_sha256[:12]}… against "
                f"{other.dataset_sha256[:12]}…): one model's validation faces were the other's "
                "training faces, so comparing them there would flatter it. Compare runs trained "
                "on the same data file with the same train.split_seed, validation_fraction and "
                "--limit."
            )
    return split


def distinct(models: list[EmotionModel]) -> list[EmotionModel]:
    """`models`, refused if one file is given twice (under any name: same content, same id)."""
    seen: dict[str, Path] = {}
    for model in models:
        if model.model_id in seen:
            raise CompareError(
                f"{seen[model.model_id]} and {model.path} are the same model "
                f"(id {model.model_id[:12]}…): name each model once"
            )
        seen[model.model_id] = model.path
    return models


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
        members=None if model.training.members is None else len(model.training.members),
    )


def mcnemar(best: Score, other: Score) -> Difference:
    """Exact McNemar: if the two were equally accurate, each face only one of them gets right
    would be a fair coin's toss between them."""
    from scipy.stats import binomtest

    faces = len(best.correct)
    only_best = int((best.correct & ~other.correct).sum())
    only_this = int((other.correct & ~best.correct).sum())
    disagreements = only_best + only_this
    p_value = binomtest(only_best, disagreements).pvalue if disagreements else 1.0
    gap = (only_best - only_this) / faces
    spread = np.sqrt(max(disagreements - (only_best - only_this) ** 2 / faces, 0.0)) / faces
    return Difference(only_best, only_this, gap, Z_95 * float(spread), float(p_value))


def unseen_validation(split: ValidationSplit, data: Path) -> tuple[Split, int]:
    """The split's validation faces that are not pixel copies of a training face, and how many
    copies were left out: the faces every model is judged on here and in the benchmarks."""
    dataset = split.load(data)
    unseen = ~copies_of(dataset.train, dataset.validation.x)
    faces = Split(dataset.validation.x[unseen], dataset.validation.y[unseen])
    return faces, int((~unseen).sum())


def compare(paths: list[Path], data: Path) -> Comparison:
    """The models scored on their common validation split's unseen faces, best first."""
    models = distinct([load_model(path) for path in paths])
    split = common_split(models)
    faces, copies_left_out = unseen_validation(split, data)
    scores = [score(model, faces.x, faces.y) for model in models]
    ranked = sorted(scores, key=lambda s: (-s.accuracy, s.nll))
    return Comparison(split, copies_left_out, ranked)


def report(comparison: Comparison) -> str:
    scores = comparison.scores
    lines = [
        f"validation: {len(scores[0].correct)} faces carved from train/ "
        f"({comparison.split.describe()}), {comparison.copies_left_out} copies of training faces "
        "left out",
        "",
        f"{'rank':<5}{'accuracy':>9}{'macro-F1':>10}{'NLL':>8}{'ECE':>8}  {'id':<13} model",
    ]
    for rank, s in enumerate(scores, start=1):
        lines.append(
            f"{rank:<5}{s.accuracy:>9.4f}{s.macro_f1:>10.4f}{s.nll:>8.4f}{s.ece:>8.4f}  "
            f"{s.model_id[:12]:<13} {s.path}"
            + ("" if s.members is None else f" (ensemble of {s.members})")
        )
    for rank, other in enumerate(scores[1:], start=2):
        d = mcnemar(scores[0], other)
        verdict = "significant" if d.p_value <= SIGNIFICANCE_LEVEL else "no detectable difference"
        lines.append(
            f"1 against {rank}: accuracy gap {d.gap:+.4f} ± {d.margin:.4f} (95 %); only 1 is "
            f"right on {d.only_best} faces, only {rank} on {d.only_this}; McNemar exact "
            f"p = {d.p_value:.3f}: {verdict}"
        )
    return "\n".join(lines)
