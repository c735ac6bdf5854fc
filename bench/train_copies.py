"""How much of a score is memory: held-out faces that are pixel-for-pixel copies of training faces.

    python bench/train_copies.py --data ../shared/data/fer2013.zip [--model artifacts/emotion.onnx]

FER2013 holds exact duplicates, within `train/` and between `train/` and `test/`. A held-out face
whose twin the model trained on is mostly recalled, not recognised, so the headline accuracy
mixes the two. This splits validation and PublicTest into faces with a copy in the run's
training faces and faces without one, and prints the model's accuracy on each, with how often a
copy's label is its twins' most frequent one (FER2013's label noise, on identical images). The
split is the model's own, read from its metadata. Writes bench/results/train_copies.{json,md}.
Reporting only: nothing here feeds a choice.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from serve_report import write_results  # noqa: E402

from training.compare import validation_split_of  # noqa: E402
from training.data import Split, face_fingerprint  # noqa: E402
from training.evaluate import load_model  # noqa: E402


def fraction(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if mask.size else None


def measure(model, seen: Split, held_out: Split) -> dict[str, float | int | None]:
    """Accuracy on held-out faces with and without an exact copy among the `seen` ones.

    A face can appear several times in `seen`, not always with one label: a copy agrees with its
    twins when its label is their most frequent one.
    """
    twin_labels: dict[bytes, Counter] = {}
    for face, label in zip(seen.x, seen.y, strict=True):
        twin_labels.setdefault(face_fingerprint(face), Counter())[int(label)] += 1
    twins = [twin_labels.get(face_fingerprint(face)) for face in held_out.x]
    copied = np.array([labels is not None for labels in twins], dtype=bool)
    agrees = np.array(
        [
            labels.most_common(1)[0][0] == label
            for labels, label in zip(twins, held_out.y, strict=True)
            if labels is not None
        ],
        dtype=bool,
    )
    right = model.predict(held_out.x).argmax(axis=1) == held_out.y
    return {
        "faces": len(held_out),
        "copies": int(copied.sum()),
        "copies_with_the_twins_label": fraction(agrees),
        "accuracy_on_copies": fraction(right[copied]),
        "accuracy_on_the_rest": fraction(right[~copied]),
        "accuracy": fraction(right),
    }


def markdown(model_path: Path, result: dict[str, dict[str, float | int]]) -> str:
    lines = [
        "| split | faces | copies of a training face | same label as the twin "
        "| accuracy on copies | on the rest | all |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, r in result.items():
        lines.append(
            f"| {split} | {r['faces']} | {r['copies']} | {r['copies_with_the_twins_label']} "
            f"| {r['accuracy_on_copies']} | {r['accuracy_on_the_rest']} | {r['accuracy']} |"
        )
    return (
        f"Model `{model_path.name}`; copies are exact pixel duplicates.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the data the model trained on")
    parser.add_argument("--model", type=Path, default=REPO / "artifacts" / "emotion.onnx")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    model = load_model(args.model)
    dataset = validation_split_of(model).load(args.data)
    result = {
        "validation": measure(model, dataset.train, dataset.validation),
        "test": measure(model, dataset.train, dataset.test),
    }
    for name, figures in result.items():
        print(name, figures)
    write_results(args.out, "train_copies", result, markdown(args.model, result))


if __name__ == "__main__":
    main()
