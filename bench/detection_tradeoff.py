"""What DETECTION_MAX_SIDE buys and costs: detection time, faces found, false faces.

    python bench/detection_tradeoff.py --data ../shared/data/fer2013.zip [--faces 200]

Face detection dominates the service's time, and its cost grows with the square of the side of
the copy it searches. This measures, for several sides, with the service's own FaceDetector:
- the CPU time of one detection on the 640x480 portrait scene the serving benchmark uses;
- the faces found in the portrait scene at seven sizes (one is right; more are false faces);
- recall on FER2013 test faces (test/ only) upscaled to a given size and pasted into a 640x480
  photo background, and the false faces found beside them.
FER2013 crops are tight, so the Haar cascade misses some at every size: read recall against the
640 column, not against 1. Writes bench/results/detection_tradeoff.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serve_report import write_results  # noqa: E402

from service.faces import FaceDetector  # noqa: E402
from tests.service.photos import VIDEO_SIZES, scene  # noqa: E402

SIDES = (320, 400, 480, 640)
FACE_SIZES = (72, 96, 144, 200)
SCENE_SIZES = (*VIDEO_SIZES, (640, 480), (512, 512), (1024, 768))
FRAME = (640, 480)


def fer_test_faces(data: Path, count: int) -> list[np.ndarray]:
    """`count` FER2013 test faces, a fixed random sample (the Kaggle layout: test/<label>/*.jpg)."""
    with zipfile.ZipFile(data) as archive:
        names = sorted(
            name
            for name in archive.namelist()
            if name.startswith("test/") and name.endswith((".jpg", ".png"))
        )
        random.Random(0).shuffle(names)
        return [
            np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("L"))
            for name in names[:count]
        ]


def background() -> np.ndarray:
    """A 640x480 photo's texture with no face in it: the portrait, enlarged and blurred."""
    portrait = scene(*FRAME).convert("L").filter(ImageFilter.GaussianBlur(24))
    return np.asarray(portrait)


def recall(detector: FaceDetector, faces: list[np.ndarray], side: int) -> dict[str, float]:
    """Each face upscaled to `side` pixels at its own place in the frame: found or not, and
    how many other boxes were reported."""
    frame = background()
    found = false = 0
    for index, face in enumerate(faces):
        image = frame.copy()
        x = 20 + (index * 37) % (FRAME[0] - 20 - side)
        y = 10 + (index * 53) % (FRAME[1] - 10 - side)
        image[y : y + side, x : x + side] = cv2.resize(
            face, (side, side), interpolation=cv2.INTER_CUBIC
        )
        boxes = detector.detect(image)
        hits = [
            box
            for box in boxes
            if abs(box.x + box.width / 2 - x - side / 2) < side / 3
            and abs(box.y + box.height / 2 - y - side / 2) < side / 3
        ]
        found += bool(hits)
        false += len(boxes) - min(1, len(hits))
    return {"recall": round(found / len(faces), 3), "false_faces": false}


def detection_cpu_ms(detector: FaceDetector, gray: np.ndarray, runs: int = 10) -> float:
    detector.detect(gray)
    started = time.process_time()
    for _ in range(runs):
        detector.detect(gray)
    return round((time.process_time() - started) / runs * 1000, 1)


def measure(data: Path, count: int) -> dict[str, object]:
    cv2.setNumThreads(1)  # CPU time of the work itself, whatever the core count
    faces = fer_test_faces(data, count)
    scenes = {f"{w}x{h}": np.asarray(scene(w, h).convert("L")) for w, h in SCENE_SIZES}
    rows = []
    for side in SIDES:
        detector = FaceDetector(max_side=side)
        rows.append(
            {
                "detection_max_side": side,
                "cpu_ms_640x480": detection_cpu_ms(detector, scenes["640x480"]),
                "portrait_faces": {name: len(detector.detect(g)) for name, g in scenes.items()},
                "fer": {str(size): recall(detector, faces, size) for size in FACE_SIZES},
            }
        )
        print(f"DETECTION_MAX_SIDE={side} measured", file=sys.stderr, flush=True)
    return {"faces": count, "rows": rows}


def markdown(result: dict[str, object]) -> str:
    rows = result["rows"]
    header = ["DETECTION_MAX_SIDE", "CPU ms, 640x480", "faces in the portrait, 7 sizes"]
    header += [f"recall / false, {size} px face" for size in FACE_SIZES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            str(row["detection_max_side"]),
            str(row["cpu_ms_640x480"]),
            " ".join(str(count) for count in row["portrait_faces"].values()),
        ]
        cells += [
            f"{row['fer'][str(s)]['recall']} / {row['fer'][str(s)]['false_faces']}"
            for s in FACE_SIZES
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        f"Detection on one OpenCV thread; FER2013 recall over {result['faces']} test faces pasted "
        f"into a 640x480 frame; portrait scenes at {', '.join(f'{w}x{h}' for w, h in SCENE_SIZES)} "
        "(1 face each is right).\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the FER2013 Kaggle zip")
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    result = measure(args.data, args.faces)
    report = markdown(result)
    write_results(args.out, "detection_tradeoff", result, report)


if __name__ == "__main__":
    main()
