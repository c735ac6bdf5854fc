"""Score an exported model on the test split and write the evidence an ML engineer reads.

It evaluates the ONNX file itself through the service's own model class, the exact graph and
preprocessing the service runs, so the numbers include whatever calibration and test-time
augmentation were folded into it.

Writes into the output folder:
    metrics.json             accuracy, macro-F1, per-class precision/recall/F1, confusion
                             matrix, expected calibration error, the machine it ran on
    confusion_matrix.png     row-normalised, labelled
    reliability_diagram.png  confidence against accuracy, with the gap per bin
    training_curves.png      accuracy and loss, train against validation (when a log is given),
                             marking where weight averaging began and what the shipped model
                             scores on validation
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.emotion import LABELS
from contract.provenance import machine_description
from training.data import Split

log = logging.getLogger(__name__)

CALIBRATION_BINS = 15


def load_model(model_path: Path):
    """The service's own model class, so the scores come from the same contract checks and
    preprocessing that serve them."""
    from service.model import EmotionModel

    return EmotionModel.load(Path(model_path))


@dataclass(frozen=True)
class CurveMarks:
    """What the per-epoch curves alone do not show, read from the model's own metadata."""

    averaging_from: int | None = None
    """First epoch (1-based) of the weight average the model ships, if it ships one."""
    shipped_validation_accuracy: float | None = None


def curve_marks(model) -> CurveMarks:
    train = (model.training.config or {}).get("train", {})
    validation = ((model.training.metrics or {}).get("validation") or {}).get("accuracy")
    return CurveMarks(
        averaging_from=train["epochs"] + 1 if train.get("swa_epochs") else None,
        shipped_validation_accuracy=validation,
    )


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the per-bin table behind the diagram."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if not in_bin.any():
            continue
        accuracy, mean_confidence = float(correct[in_bin].mean()), float(confidence[in_bin].mean())
        ece += in_bin.mean() * abs(accuracy - mean_confidence)
        table.append(
            {
                "low": float(low),
                "high": float(high),
                "count": int(in_bin.sum()),
                "accuracy": accuracy,
                "confidence": mean_confidence,
            }
        )
    return float(ece), table


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(LABELS)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    ece, bins = expected_calibration_error(probabilities, labels)
    return {
        "images": len(labels),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(np.mean(f1)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(LABELS)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "expected_calibration_error": ece,
        "calibration_bins": bins,
    }


# --- plots --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work on a headless server
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(counts: list[list[int]], path: Path) -> None:
    plt = _pyplot()
    matrix = np.asarray(counts, dtype=np.float64)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for row in range(len(LABELS)):
        for column in range(len(LABELS)):
            value = normalised[row, column]
            axes.text(
                column,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value > 0.5 else "black",
                fontsize=9,
            )
    axes.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    axes.set_yticks(range(len(LABELS)), LABELS)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (each row sums to 1)")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_reliability(bins: list[dict[str, float]], ece: float, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 6))
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = 1.0 / CALIBRATION_BINS
    axes.bar(
        centres, [b["accuracy"] for b in bins], width=width, edgecolor="black", label="accuracy"
    )
    axes.bar(
        centres,
        [b["confidence"] - b["accuracy"] for b in bins],
        bottom=[b["accuracy"] for b in bins],
        width=width,
        color="red",
        alpha=0.3,
        label="gap to confidence",
    )
    axes.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability diagram (ECE {ece:.3f})")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def read_history(path: Path) -> dict[str, list[float]]:
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row]
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def plot_curves(
    history: dict[str, list[float]], path: Path, marks: CurveMarks = CurveMarks()
) -> None:
    plt = _pyplot()
    epochs = [int(e) + 1 for e in history["epoch"]]
    figure, (accuracy_axes, loss_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, metric in ((accuracy_axes, "accuracy"), (loss_axes, "loss")):
        axes.plot(epochs, history[metric], label="train")
        axes.plot(epochs, history[f"val_{metric}"], label="validation")
        if marks.averaging_from is not None:
            axes.axvline(
                marks.averaging_from - 0.5,
                color="grey",
                linestyle="--",
                label=f"weight averaging from epoch {marks.averaging_from}",
            )
        if metric == "accuracy" and marks.shipped_validation_accuracy is not None:
            axes.plot(
                [epochs[-1]],
                [marks.shipped_validation_accuracy],
                marker="*",
                markersize=12,
                linestyle="none",
                color="black",
                label=f"shipped model, validation {marks.shipped_validation_accuracy:.3f}",
            )
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    accuracy_axes.set_title("Accuracy (train is on augmented images)")
    loss_axes.set_title("Loss (train includes label smoothing and class weights)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- the command --------------------------------------------------------------------------------


def evaluate_model(
    model_path: Path, test: Split, out: Path, history: Path | None = None
) -> dict[str, Any]:
    """Score `model_path` on `test`, write metrics.json and the PNGs into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    probabilities = model.predict(test.x).astype(np.float64)
    metrics = {
        "split": "test (FER2013 PublicTest)",
        # An int8 graph's answers can depend on the CPU's integer kernels (VNNI or not), so the
        # figures say where they were measured.
        "machine": machine_description(),
        **classification_metrics(probabilities, test.y),
    }
    plot_confusion_matrix(metrics["confusion_matrix"], out / "confusion_matrix.png")
    plot_reliability(
        metrics["calibration_bins"],
        metrics["expected_calibration_error"],
        out / "reliability_diagram.png",
    )
    if history is not None and Path(history).exists():
        plot_curves(read_history(Path(history)), out / "training_curves.png", curve_marks(model))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info(
        "test: accuracy %.4f, macro-F1 %.4f, ECE %.4f on %d images",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["expected_calibration_error"],
        metrics["images"],
    )
    for label, scores in metrics["per_class"].items():
        log.info(
            "  %-9s precision %.3f  recall %.3f  F1 %.3f  (%d)",
            label,
            scores["precision"],
            scores["recall"],
            scores["f1"],
            scores["support"],
        )
    return metrics
