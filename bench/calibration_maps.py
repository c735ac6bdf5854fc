"""Whether a richer calibration map than one temperature would serve a model better.

    python bench/calibration_maps.py --model artifacts/emotion.onnx \
        --data ../shared/data/fer2013.zip [--repeats 20]

Training fits one temperature on validation (training/calibrate.py): it cannot change which
emotion wins. Richer maps of the served log-probabilities can: a temperature with a bias per
class (which also shifts the class priors the class weights tilted), and vector scaling (a scale
and a bias per class). Each is fitted, by negative log-likelihood, on one random half of the
model's unseen validation faces and scored on the other half, both ways round, `--repeats` times,
so the figures are out-of-sample; `test/` is never read. The first row is the model as served.
Prints accuracy, macro-F1, NLL and expected calibration error for each map, and the accuracy
change against the model as served (mean and spread over the halves). Writes
docs/studies/calibration_maps.{json,md}, beside the experiment log: a one-off study, whose
decision is logged there. Takes about a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax

REPO = Path(__file__).resolve().parents[1]

from serve_report import write_results  # noqa: E402

from contract.provenance import machine_description  # noqa: E402
from training.calibrate import negative_log_likelihood  # noqa: E402
from training.compare import unseen_validation, validation_split_of  # noqa: E402
from training.evaluate import classification_metrics, load_model  # noqa: E402

CLASSES = 7
RIDGE = 1e-3
"""A small L2 pull of vector scaling's 14 parameters toward the identity map, which keeps the
fit stable on the rare classes (disgust has about 50 faces in a half)."""

Map = Callable[[np.ndarray], np.ndarray]
"""Log-probabilities in, logits out (the softmax of which is served)."""


def fit_as_served(log_p: np.ndarray, labels: np.ndarray) -> Map:
    return lambda z: z


def fit_temperature(log_p: np.ndarray, labels: np.ndarray) -> Map:
    w = fitted(lambda w: log_p / np.exp(w[0]), labels, np.zeros(1))
    return lambda z: z / np.exp(w[0])


def fit_temperature_and_bias(log_p: np.ndarray, labels: np.ndarray) -> Map:
    w = fitted(lambda w: log_p / np.exp(w[0]) + w[1:], labels, np.zeros(1 + CLASSES))
    return lambda z: z / np.exp(w[0]) + w[1:]


def fit_vector_scaling(log_p: np.ndarray, labels: np.ndarray) -> Map:
    w = fitted(
        lambda w: log_p * np.exp(w[:CLASSES]) + w[CLASSES:],
        labels,
        np.zeros(2 * CLASSES),
        ridge=RIDGE,
    )
    return lambda z: z * np.exp(w[:CLASSES]) + w[CLASSES:]


def fitted(
    mapped: Callable[[np.ndarray], np.ndarray],
    labels: np.ndarray,
    start: np.ndarray,
    ridge: float = 0.0,
) -> np.ndarray:
    """The parameters that minimise the mapped logits' NLL (plus `ridge` times their square)."""

    def loss(w: np.ndarray) -> float:
        return negative_log_likelihood(mapped(w), labels, 1.0) + ridge * float(w @ w)

    return minimize(loss, start, method="L-BFGS-B").x


MAPS: dict[str, Callable[[np.ndarray, np.ndarray], Map]] = {
    "as served (the validation-fitted temperature)": fit_as_served,
    "temperature refitted on the half": fit_temperature,
    "temperature + a bias per class": fit_temperature_and_bias,
    "vector scaling (a scale and a bias per class)": fit_vector_scaling,
}


def cross_validated(
    log_p: np.ndarray, labels: np.ndarray, repeats: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Each map's out-of-sample scores, averaged over 2 x `repeats` half-splits."""
    rng = np.random.default_rng(seed)
    scores: dict[str, list[list[float]]] = {name: [] for name in MAPS}
    for _ in range(repeats):
        order = rng.permutation(len(labels))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        for fit_on, score_on in (halves, halves[::-1]):
            for name, fit in MAPS.items():
                logits = fit(log_p[fit_on], labels[fit_on])(log_p[score_on])
                metrics = classification_metrics(softmax(logits, axis=1), labels[score_on])
                scores[name].append(
                    [
                        metrics["accuracy"],
                        metrics["macro_f1"],
                        negative_log_likelihood(logits, labels[score_on], 1.0),
                        metrics["expected_calibration_error"],
                    ]
                )
    served = np.array(scores[next(iter(MAPS))])[:, 0]
    results = {}
    for name, rows in scores.items():
        table = np.array(rows)
        change = table[:, 0] - served
        results[name] = {
            "accuracy": round(float(table[:, 0].mean()), 4),
            "macro_f1": round(float(table[:, 1].mean()), 4),
            "nll": round(float(table[:, 2].mean()), 4),
            "ece": round(float(table[:, 3].mean()), 4),
            "accuracy_change": round(float(change.mean()), 4),
            "accuracy_change_sd": round(float(change.std()), 4),
        }
    return results


def markdown(header: str, results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| map | accuracy | change (sd over halves) | macro-F1 | NLL | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['accuracy']:.4f} | {r['accuracy_change']:+.4f} "
            f"({r['accuracy_change_sd']:.4f}) | {r['macro_f1']:.4f} | {r['nll']:.4f} "
            f"| {r['ece']:.4f} |"
        )
    return header + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported emotion.onnx")
    parser.add_argument("--data", type=Path, required=True, help="the data its run trained on")
    parser.add_argument("--repeats", type=int, default=20, help="random half-splits to average")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "studies")
    args = parser.parse_args()
    model = load_model(args.model)
    faces, copies_left_out = unseen_validation(validation_split_of(model), args.data)
    probabilities = model.predict(faces.x).astype(np.float64)
    log_p = np.log(np.maximum(probabilities, 1e-12))
    results = cross_validated(log_p, faces.y, args.repeats)
    header = (
        f"`{args.model.name}` (id {model.model_id[:12]}), {len(faces)} unseen validation faces "
        f"({copies_left_out} copies of training faces left out), each map fitted on one half and "
        f"scored on the other, {2 * args.repeats} halves; on {machine_description()}."
    )
    write_results(
        args.out,
        "calibration_maps",
        {
            "model": model.model_id,
            "faces": len(faces),
            "halves": 2 * args.repeats,
            "results": results,
        },
        markdown(header, results),
    )


if __name__ == "__main__":
    main()
