"""What a client gets: FER2013 crops sent through the service's own pipeline, by detect mode.

    python bench/pipeline_accuracy.py --data ../shared/data/fer2013.zip [--split validation|test]

`python -m training evaluate` scores the model on the 48x48 crops as they are, which is what
`detect=never` does. The service's default, `detect=auto`, first looks for a face in the crop
and, when it finds one, cuts its own crop around the detector's box, so a client sending
FER2013 crops gets a different, and measurably not worse, answer. Each crop is PNG-encoded and
passed through `EmotionPipeline.predict` in process (decode, detect, crop, infer: the same code
an HTTP request runs, without the HTTP). Writes bench/results/pipeline_accuracy_<split>.{json,md}.
Validation is the model's own training run's hold-out (read from its metadata); `--split test`
reads PublicTest, to report, never to choose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]

from serve_report import write_results  # noqa: E402

from service.app import load_detector, load_model  # noqa: E402
from service.images import ImageLimits  # noqa: E402
from service.pipeline import EmotionPipeline  # noqa: E402
from service.schemas import DetectMode, Prediction  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.compare import validation_split_of  # noqa: E402
from training.data import LABELS, Split, load_test_split  # noqa: E402

BATCH = 64


def measure(pipeline: EmotionPipeline, faces: Split) -> dict[str, dict[str, float | int]]:
    """Per detect mode: accuracy, and on how many crops the detector found a face."""
    uploads = [cv2.imencode(".png", face)[1].tobytes() for face in faces.x]
    result = {}
    for mode in (DetectMode.never, DetectMode.auto):
        right = detected = 0
        for start in range(0, len(uploads), BATCH):
            answers = pipeline.predict(uploads[start : start + BATCH], mode, max_faces=1)
            for answer, label in zip(answers, faces.y[start : start + BATCH], strict=True):
                assert isinstance(answer, Prediction), answer
                face = answer.faces[0]
                detected += face.detected
                right += face.emotion == LABELS[label]
        result[mode.value] = {
            "accuracy": round(right / len(uploads), 4),
            "face_found": detected,
            "crops": len(uploads),
        }
    return result


def markdown(split: str, settings: Settings, result: dict[str, dict[str, float | int]]) -> str:
    lines = ["| detect | accuracy | crops where a face was found |", "|---|---|---|"]
    for mode, figures in result.items():
        lines.append(
            f"| {mode} | {figures['accuracy']} | {figures['face_found']} of {figures['crops']} |"
        )
    return (
        f"FER2013 {split} crops (48x48 PNG) through the service pipeline, in process; "
        f"FACE_DETECTOR={settings.face_detector}, model `{settings.model_path.name}`.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the FER2013 Kaggle zip")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    settings = Settings()  # MODEL_PATH, FACE_DETECTOR... from the environment, as the service
    limits = ImageLimits(
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        max_aspect_ratio=settings.max_aspect_ratio,
    )
    model = load_model(settings)
    pipeline = EmotionPipeline(model, load_detector(settings), limits)
    if args.split == "test":
        faces = load_test_split(args.data)
    else:
        faces = validation_split_of(model).load(args.data).validation
    result = measure(pipeline, faces)
    name = f"pipeline_accuracy_{args.split}"
    write_results(args.out, name, result, markdown(args.split, settings, result))


if __name__ == "__main__":
    main()
