"""Does the emotion model read faces as well through YuNet's and BlazeFace's crops as Haar's?

    python bench/detector_crops.py --data ../shared/data/fer2013.zip [--faces 2000]

The shipped emotion model was trained on FER2013's own crops, and the contract's `crop_margin`
was measured on Haar boxes; YuNet's and BlazeFace's boxes are corrected to frame faces the same
way (`python -m training crop-margin`). This checks the end of that chain: FER2013 validation faces
(the model's own run's hold-out, read from its metadata; never test/) are upscaled 4x into a neutral
border, found by each detector, cropped by the service's own `crop_face` with the model's
contract, and classified. Accuracy is compared on the faces every detector finds, beside the
accuracy of the original 48x48 crops (what `detect=never` sees). Writes
bench/results/detector_crops.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]

from serve_report import write_results  # noqa: E402

from service.blazeface import BlazeFaceDetector  # noqa: E402
from service.faces import FaceBox, FaceDetector, crop_face  # noqa: E402
from service.haar import HaarDetector  # noqa: E402
from service.model import EmotionModel  # noqa: E402
from service.settings import (  # noqa: E402
    DEFAULT_FACE_DETECTOR_PATH,
    DEFAULT_MODEL_PATH,
    DEFAULT_YUNET_PATH,
)
from service.yunet import YuNetDetector  # noqa: E402
from training.compare import validation_split_of  # noqa: E402
from training.crop_margin import UPSCALE  # noqa: E402


def framed(face: np.ndarray) -> np.ndarray:
    """`face` upscaled as `python -m training crop-margin` does, in a neutral border the width of
    half of it."""
    side = face.shape[0] * UPSCALE
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, *(side // 2,) * 4, cv2.BORDER_CONSTANT, value=128)


def one_face(detector: FaceDetector, image: np.ndarray) -> FaceBox | None:
    boxes = detector.detect(image, max_faces=2)
    return boxes[0] if len(boxes) == 1 else None


def measure(
    data: Path, count: int, model: EmotionModel, blazeface_path: Path, yunet_path: Path
) -> dict:
    validation = validation_split_of(model).load(data).validation
    pick = np.random.default_rng(0).choice(len(validation), min(count, len(validation)), False)
    faces, labels = validation.x[pick], validation.y[pick]
    detectors: dict[str, FaceDetector] = {
        "haar": HaarDetector(),
        "blazeface": BlazeFaceDetector(blazeface_path),
        "yunet": YuNetDetector(yunet_path),
    }
    margin, size = model.contract.crop_margin, model.contract.input_size
    crops: dict[str, list[np.ndarray | None]] = {name: [] for name in detectors}
    for face in faces:
        image = framed(face)
        for name, detector in detectors.items():
            box = one_face(detector, image)
            crop = None if box is None else crop_face(image, box, margin=margin, size=size)
            crops[name].append(crop)
    every = [i for i in range(len(faces)) if all(crops[n][i] is not None for n in detectors)]

    def accuracy(batch: list[np.ndarray], truth: np.ndarray) -> float:
        predicted = model.predict(np.stack(batch)).argmax(1)
        return round(float((predicted == truth).mean()), 4)

    result = {
        "faces": len(faces),
        "found": {name: sum(c is not None for c in crops[name]) for name in detectors},
        "found_by_all": len(every),
        "accuracy_on_faces_all_find": {
            name: accuracy([crops[name][i] for i in every], labels[every]) for name in detectors
        }
        | {"original_48x48_crops": accuracy([faces[i] for i in every], labels[every])},
    }
    for name in detectors:
        found = [i for i, crop in enumerate(crops[name]) if crop is not None]
        result[f"accuracy_on_faces_{name}_finds"] = accuracy(
            [crops[name][i] for i in found], labels[found]
        )
    return result


def markdown(result: dict) -> str:
    every = result["accuracy_on_faces_all_find"]
    lines = [
        "| crops of the faces every detector finds | emotion accuracy |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in every.items()),
    ]
    found = ", ".join(f"{name} {count}" for name, count in result["found"].items())
    own = ", ".join(
        f"{name} {result[f'accuracy_on_faces_{name}_finds']}" for name in result["found"]
    )
    return (
        f"FER2013 validation faces (the shipped run's hold-out), {result['faces']} drawn, upscaled "
        f"{UPSCALE}x in a neutral border. One face found: {found}; by all: "
        f"{result['found_by_all']}. Each detector's accuracy on all the faces it finds: "
        f"{own}.\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the FER2013 Kaggle zip")
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--blazeface", type=Path, default=DEFAULT_FACE_DETECTOR_PATH)
    parser.add_argument("--yunet", type=Path, default=DEFAULT_YUNET_PATH)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    model = EmotionModel.load(args.model)
    result = measure(args.data, args.faces, model, args.blazeface, args.yunet)
    write_results(args.out, "detector_crops", result, markdown(result))


if __name__ == "__main__":
    main()
