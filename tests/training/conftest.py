"""Tiny FER2013 look-alikes in every layout, made from generated images.

Each class gets its own brightness and stripe pattern plus noise, so a small network can learn
them in a couple of epochs; the point is to run the real pipeline end to end in seconds, not to
measure a model.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.emotion import INPUT_SIZE, LABELS

PER_CLASS = {"train": 12, "test": 4}

# The `emotion` numbers of the ICML 2013 challenge's fer2013.csv, as published with it (0=Angry,
# 1=Disgust, 2=Fear, 3=Happy, 4=Sad, 5=Surprise, 6=Neutral). Written out here rather than imported
# from training/, so that the CSV the tests write cannot share a mistake with the code reading it.
ICML_CSV_NUMBER = {
    "angry": 0,
    "disgust": 1,
    "fear": 2,
    "happy": 3,
    "sad": 4,
    "surprise": 5,
    "neutral": 6,
}

Face = tuple[str, str, int, np.ndarray]
"""(split, label, index within its class, 48x48 uint8 face)"""


def synthetic_face(label_index: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE]
    stripes = np.sin((x * np.cos(label_index) + y * np.sin(label_index)) / (2 + label_index))
    image = 40 + label_index * 25 + 30 * stripes + rng.normal(0, 8, (INPUT_SIZE, INPUT_SIZE))
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(face: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(face, mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def generated_faces(per_class: dict[str, int] = PER_CLASS, seed: int = 0) -> Iterator[Face]:
    """Yield (split, label, index, face) for a balanced tiny data set."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label_index, label in enumerate(LABELS):
            for index in range(count):
                yield split, label, index, synthetic_face(label_index, rng)


def write_folder(
    root: Path, per_class: dict[str, int] = PER_CLASS, faces: Iterable[Face] | None = None
) -> Path:
    for split, label, index, face in generated_faces(per_class) if faces is None else faces:
        path = root / split / label / f"{split}_{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(face))
    return root


def write_zip(
    path: Path, per_class: dict[str, int] = PER_CLASS, faces: Iterable[Face] | None = None
) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for split, label, index, face in generated_faces(per_class) if faces is None else faces:
            archive.writestr(f"{split}/{label}/{split}_{index}.jpg", jpeg_bytes(face))
    return path


def write_csv(
    path: Path,
    per_class: dict[str, int] = PER_CLASS,
    private: int = 3,
    faces: Iterable[Face] | None = None,
) -> Path:
    """The ICML layout, emotions numbered as the challenge numbered them; `private` PrivateTest
    rows per class are added, all of label 0 and pure white, so a test can prove they never reach
    any split."""
    usage = {"train": "Training", "test": "PublicTest"}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for split, label, _index, face in generated_faces(per_class) if faces is None else faces:
            writer.writerow(
                [ICML_CSV_NUMBER[label], " ".join(map(str, face.ravel())), usage[split]]
            )
        for _ in range(private * len(LABELS)):
            writer.writerow([0, " ".join(["255"] * INPUT_SIZE * INPUT_SIZE), "PrivateTest"])
    return path


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_zip(tmp_path_factory.mktemp("zip") / "fer2013.zip")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder") / "fer2013")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("csv") / "fer2013.csv")


@pytest.fixture(scope="session")
def smoke_config(repo_root: Path) -> Path:
    return repo_root / "training" / "configs" / "smoke.toml"


@pytest.fixture(scope="session")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_zip: Path, smoke_config: Path
) -> Path:
    """A whole tiny run (two epochs, exported and evaluated): copy it before changing it."""
    from training.train import train

    out = tmp_path_factory.mktemp("run")
    train(tiny_zip, out, smoke_config)
    return out
