"""How much larger than a detector box a FER2013 crop is: the contract's crop margin, measured.

FER2013's 48x48 crops frame a face with some margin; a detector's boxes frame it tighter. The
service crops `crop_margin` x the detector box around its centre, so this measures that factor
with the service's own detectors, run exactly as the service runs them: each FER2013 train face
(never test/) is upscaled, set in a neutral border (so the detector sees the whole crop),
detected, and the crop's side is compared with the box's.

    python -m training crop-margin --data ../shared/data/fer2013.zip [--images 3000]
        [--detector haar|blazeface] [--raw]

For the Haar cascade (the default) the median goes into `[export] crop_margin` (the default in
training/config.py) and from there into the model's contract. With `--detector blazeface --raw`
it measures BlazeFace's own boxes, uncorrected, and prints the box correction that makes them
frame the face as Haar boxes do (side and centre, from the two medians), which
`training/face_detector.py` writes into face_detector.onnx; without `--raw` it checks that the
shipped correction does so. The last recorded figures: docs/studies/crop_margin.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from service.blazeface import BlazeFaceDetector
from service.faces import FaceDetector
from service.haar import HaarDetector
from service.yunet import YuNetDetector
from training.data import read_splits

NETWORKS = {"blazeface": BlazeFaceDetector, "yunet": YuNetDetector}
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


def correction(network: dict[str, object], haar: dict[str, object]) -> dict[str, float]:
    """A network's box correction from both measurements: a FER2013 crop is `margin` times a
    box's side around its centre moved by `offset` times that side, for either detector; the
    corrected box must be where the Haar box is."""
    scale = network["crop_margin_median"] / haar["crop_margin_median"]
    return {"scale": round(scale, 3)} | {
        f"offset_{axis}": round(
            network["centre_offset_median"][axis] - scale * haar["centre_offset_median"][axis],
            3,
        )
        for axis in ("x", "y")
    }


def crop_margin(data: Path, images: int, seed: int, detector: str, model: Path, raw: bool) -> str:
    """The measurement as JSON: Haar's always, and BlazeFace's or YuNet's (with its correction)
    when asked."""
    train = read_splits(data)[0]["train"]
    pick = np.random.default_rng(seed).choice(len(train), images, replace=False)
    faces = train.x[pick]
    haar = measure(faces, HaarDetector())
    result: dict[str, object] = {"haar": haar}
    if detector != "haar":
        network = NETWORKS[detector](model, correct_boxes=not raw)
        key = detector + (" (raw boxes)" if raw else "")
        result[key] = measure(faces, network)
        if raw:
            result["box_correction"] = correction(result[key], haar)
    return json.dumps(result, indent=2)
