"""Measure the crop margin: how much larger than a detector box a FER2013 crop is.

FER2013's 48x48 crops frame a face with some margin; OpenCV's Haar boxes frame it tighter. The
service crops `crop_margin` x the detector box around its centre, so this script measures that
factor with the service's own detector: each FER2013 face is upscaled, set in a neutral border
(so the detector can see the whole crop), detected, and the crop's side is compared with the box's.

    python bench/crop_margin.py --data ../shared/data/fer2013.zip [--images 3000]
        [--detector haar|blazeface] [--raw]

It reads train/ only (never test/), prints the distribution and the median. For the Haar
cascade (the default here) the median goes into `[export] crop_margin` of the training config
and from there into the model's contract. With `--detector blazeface --raw` it measures
BlazeFace's own boxes, uncorrected, and prints the box correction that makes them frame the
face as Haar boxes do (side and centre, from the two medians), which
`training/face_detector.py` writes into face_detector.onnx; without `--raw` it checks that the
shipped correction does so (margin ~ the Haar margin, centre offset ~ the Haar offset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.blazeface import BlazeFaceDetector
from service.faces import FaceDetector
from service.haar import HaarDetector
from service.settings import DEFAULT_FACE_DETECTOR_PATH
from training.data import read_splits

UPSCALE = 4  # 48 px -> 192 px, a face size the detector sees in ordinary photos


def measure(faces: np.ndarray, detector: FaceDetector) -> dict[str, object]:
    side = faces.shape[1] * UPSCALE
    pad = side // 2
    ratios, offsets_x, offsets_y, found = [], [], [], 0
    for face in faces:
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        framed = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
        boxes = detector.detect(framed, max_faces=2)
        if len(boxes) != 1:
            continue
        found += 1
        box = boxes[0]
        box_side = max(box.width, box.height)
        ratios.append(side / box_side)
        offsets_x.append((pad + side / 2 - (box.x + box.width / 2)) / box_side)
        offsets_y.append((pad + side / 2 - (box.y + box.height / 2)) / box_side)
    ratios_array = np.asarray(ratios)
    return {
        "images": len(faces),
        "one_face_found": found,
        "crop_margin_median": round(float(np.median(ratios_array)), 3),
        "crop_margin_quartiles": [
            round(float(q), 3) for q in np.percentile(ratios_array, [25, 75])
        ],
        "centre_offset_median": {
            "x": round(float(np.median(offsets_x)), 3),
            "y": round(float(np.median(offsets_y)), 3),
        },
    }


def correction(blazeface: dict[str, object], haar: dict[str, object]) -> dict[str, float]:
    """The BlazeFace box correction from both measurements: a FER2013 crop is `margin` times a
    box's side around its centre moved by `offset` times that side, for either detector; the
    corrected BlazeFace box must be where the Haar box is."""
    scale = blazeface["crop_margin_median"] / haar["crop_margin_median"]
    return {"scale": round(scale, 3)} | {
        f"offset_{axis}": round(
            blazeface["centre_offset_median"][axis] - scale * haar["centre_offset_median"][axis],
            3,
        )
        for axis in ("x", "y")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector", choices=("haar", "blazeface"), default="haar")
    parser.add_argument("--model", type=Path, default=DEFAULT_FACE_DETECTOR_PATH)
    parser.add_argument("--raw", action="store_true", help="BlazeFace boxes, uncorrected")
    args = parser.parse_args()
    train = read_splits(args.data)[0]["train"]
    pick = np.random.default_rng(args.seed).choice(len(train), args.images, replace=False)
    faces = train.x[pick]
    haar = measure(faces, HaarDetector())
    result = {"haar": haar}
    if args.detector == "blazeface":
        blazeface = BlazeFaceDetector(args.model, correct_boxes=not args.raw)
        result["blazeface" + (" (raw boxes)" if args.raw else "")] = measure(faces, blazeface)
        if args.raw:
            result["box_correction"] = correction(result["blazeface (raw boxes)"], haar)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
