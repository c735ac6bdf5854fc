"""The face detectors compared: detection time, faces found by size, false faces.

    python bench/detection_tradeoff.py --data ../shared/data/fer2013.zip [--faces 300]
        [--blazeface other.onnx ...] [--yunet other.onnx ...]

Face detection dominated the service's time with the Haar cascade, whose cost grows with the
square of the side of the copy it searches (DETECTION_MAX_SIDE). This measures the Haar cascade
at several sides, BlazeFace (the shipped artifacts/face_detector.onnx, and any other
conversion given with --blazeface) and YuNet (artifacts/yunet.onnx, or --yunet), each the
service's own detector class:
- the CPU time of one detection on the 640x480 portrait scene the serving benchmark uses (one
  OpenCV thread, one onnxruntime thread);
- the faces found in the portrait scene at seven sizes, and whether the one found is in place
  (one in place is right; more are false faces);
- recall on FER2013 test faces (test/ only) upscaled to a given size and pasted into a 640x480
  photo background, and the false faces found beside them;
- several people in photos smaller than 640 pixels: four heads cut from the real portrait, at
  random heights (6 layouts) in 320x240, 400x300 and 512x384 frames, the faces found of 72 at
  each face size.
FER2013 crops are tight (little forehead and chin), which costs both detectors some faces: read
recall against the other rows, not against 1. Writes bench/results/detection_tradeoff.{json,md}.
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

from serve_report import write_results  # noqa: E402

from harness.photos import VIDEO_SIZES, face_in_scene, scene  # noqa: E402
from service.blazeface import BlazeFaceDetector  # noqa: E402
from service.faces import FaceDetector  # noqa: E402
from service.haar import HaarDetector  # noqa: E402
from service.settings import DEFAULT_FACE_DETECTOR_PATH, DEFAULT_YUNET_PATH  # noqa: E402
from service.yunet import YuNetDetector  # noqa: E402

SIDES = (320, 400, 480, 640)
FACE_SIZES = (32, 48, 72, 96, 144, 200)
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


GROUP_FRAMES = ((320, 240), (400, 300), (512, 384))
GROUP_FACE_SIZES = (32, 40, 48)
GROUP_LAYOUTS = 6


def group_faces_found(detector: FaceDetector, face: int) -> int:
    """Of four heads (their faces `face` pixels) in each group frame and layout, how many are
    found: a box centred within half a face of each."""
    portrait = np.asarray(scene(512, 512).convert("L"))
    head = portrait[3:223, 114:334]  # 220 px around the face, whose box is ~106 px
    side = round(220 * face / 106)
    small = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
    found = 0
    for width, height in GROUP_FRAMES:
        for layout in range(GROUP_LAYOUTS):
            rng = np.random.default_rng(layout)
            frame = np.full((height, width), 110, np.uint8)
            centres = []
            for left in np.linspace(0, width - side, 4).astype(int):
                top = int(rng.integers(0, height - side))
                frame[top : top + side, left : left + side] = small
                centres.append((left + side / 2, top + side / 2))
            boxes = detector.detect(frame)
            found += sum(
                any(
                    abs(box.x + box.width / 2 - x) < face / 2
                    and abs(box.y + box.height / 2 - y) < face / 2
                    for box in boxes
                )
                for x, y in centres
            )
    return found


def detection_cpu_ms(detector: FaceDetector, gray: np.ndarray, runs: int = 10) -> float:
    detector.detect(gray)
    started = time.process_time()
    for _ in range(runs):
        detector.detect(gray)
    return round((time.process_time() - started) / runs * 1000, 1)


def portrait_faces(detector: FaceDetector, scenes: dict[str, np.ndarray]) -> dict[str, str]:
    """Per scene: how many faces were found, with `*` when the one found is not in place."""
    found = {}
    for name, gray in scenes.items():
        boxes = detector.detect(gray)
        height, width = gray.shape
        placed = len(boxes) == 1 and face_in_scene(
            boxes[0].x + boxes[0].width / 2, boxes[0].y + boxes[0].height / 2, width, height
        )
        found[name] = f"{len(boxes)}" + ("" if placed or len(boxes) != 1 else "*")
    return found


def detectors(blazeface: list[Path], yunet: list[Path]) -> dict[str, FaceDetector]:
    """The detectors compared, by the name their row gets."""
    named: dict[str, FaceDetector] = {
        f"haar, DETECTION_MAX_SIDE={side}": HaarDetector(max_side=side) for side in SIDES
    }
    for path in blazeface:
        detector = BlazeFaceDetector(path, intra_op_threads=1)
        sizes = "+".join(str(size) for size in detector.metadata.input_sizes)
        named[f"blazeface {sizes} px ({path.name})"] = detector
    for path in yunet:
        named[f"yunet, the copy whole ({path.name})"] = YuNetDetector(path, intra_op_threads=1)
    return named


def measure(data: Path, count: int, blazeface: list[Path], yunet: list[Path]) -> dict[str, object]:
    cv2.setNumThreads(1)  # CPU time of the work itself, whatever the core count
    faces = fer_test_faces(data, count)
    scenes = {f"{w}x{h}": np.asarray(scene(w, h).convert("L")) for w, h in SCENE_SIZES}
    rows = []
    for name, detector in detectors(blazeface, yunet).items():
        rows.append(
            {
                "detector": name,
                "cpu_ms_640x480": detection_cpu_ms(detector, scenes["640x480"]),
                "portrait_faces": portrait_faces(detector, scenes),
                "fer": {str(size): recall(detector, faces, size) for size in FACE_SIZES},
                "group_faces_found": {
                    str(size): group_faces_found(detector, size) for size in GROUP_FACE_SIZES
                },
            }
        )
        print(f"{name} measured", file=sys.stderr, flush=True)
    return {"faces": count, "rows": rows}


def markdown(result: dict[str, object]) -> str:
    rows = result["rows"]
    header = ["detector", "CPU ms, 640x480", "faces in the portrait, 7 sizes"]
    header += [f"recall / false, {size} px face" for size in FACE_SIZES]
    header.append(f"group photos, faces found of 72 at {'/'.join(map(str, GROUP_FACE_SIZES))} px")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["detector"],
            str(row["cpu_ms_640x480"]),
            " ".join(str(count) for count in row["portrait_faces"].values()),
        ]
        cells += [
            f"{row['fer'][str(s)]['recall']} / {row['fer'][str(s)]['false_faces']}"
            for s in FACE_SIZES
        ]
        cells.append(" / ".join(str(n) for n in row["group_faces_found"].values()))
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "Detection on one OpenCV thread and one onnxruntime thread; FER2013 recall over "
        f"{result['faces']} test faces pasted into a 640x480 frame; portrait scenes at "
        f"{', '.join(f'{w}x{h}' for w, h in SCENE_SIZES)} (1 face each is right; `1*`: one "
        "face, not where the portrait's face is); group photos: four heads cut from the "
        "portrait at random heights in "
        f"{', '.join(f'{w}x{h}' for w, h in GROUP_FRAMES)} frames, {GROUP_LAYOUTS} layouts "
        "each.\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the FER2013 Kaggle zip")
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument(
        "--blazeface",
        type=Path,
        action="append",
        help="a BlazeFace conversion to compare (default: the shipped one); repeatable",
    )
    parser.add_argument(
        "--yunet",
        type=Path,
        action="append",
        help="a YuNet file to compare (default: the shipped one); repeatable",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    result = measure(
        args.data,
        args.faces,
        args.blazeface or [DEFAULT_FACE_DETECTOR_PATH],
        args.yunet or [DEFAULT_YUNET_PATH],
    )
    report = markdown(result)
    write_results(args.out, "detection_tradeoff", result, report)


if __name__ == "__main__":
    main()
