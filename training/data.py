"""FER2013 from disk into numpy arrays and honest splits.

Three layouts are accepted, all read the same way into uint8 arrays of 48x48 faces:
- the Kaggle zip (`train/<emotion>/*.jpg`, `test/<emotion>/*.jpg`),
- that zip unpacked into a folder,
- the original ICML `fer2013.csv` (`emotion,pixels,Usage`), whose `emotion` numbers follow the
  ICML 2013 challenge's own order, not ours (see `ICML_CSV_LABELS`).

The validation split is carved from `train/` (stratified, seeded); `test/` is only handed out for
the final evaluation. The CSV's PrivateTest rows are dropped on reading: they are never seen.
Everything here is numpy, so the arrays feed any Keras backend.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from contract.emotion import INPUT_SIZE, LABELS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
CSV_USAGE = {"Training": "train", "PublicTest": "test"}  # PrivateTest is held back, never read

ICML_CSV_LABELS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
"""The emotion each `emotion` number of the ICML `fer2013.csv` stands for (0 Angry, 1 Disgust,
2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral, as the challenge published it). It is not the order
of `LABELS` (neutral sits between happy and sad there), so a CSV number is never an index into
`LABELS`: it goes through `CSV_EMOTION_TO_LABEL`."""

CSV_EMOTION_TO_LABEL: dict[int, int] = {
    number: LABELS.index(name) for number, name in enumerate(ICML_CSV_LABELS)
}
MAX_UNREADABLE_FRACTION = 0.01


class DataError(Exception):
    """The data cannot be used; the message says what to do about it."""


@dataclass(frozen=True)
class Split:
    """Faces `x` (uint8, N x 48 x 48) and label indices `y` (int64, N) into `LABELS`."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(LABELS))
        return {label: int(n) for label, n in zip(LABELS, counts, strict=True)}


@dataclass(frozen=True)
class Dataset:
    train: Split
    validation: Split
    test: Split
    sha256: str
    source: str


# --- reading ------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(root: Path) -> str:
    """A stable fingerprint of an unpacked data set: relative paths and contents, sorted."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def decode_face(data: bytes) -> np.ndarray:
    """Bytes of one image -> 48x48 grayscale uint8 (resized if a source image is not 48x48)."""
    with Image.open(io.BytesIO(data)) as image:
        gray = image.convert("L")
        if gray.size != (INPUT_SIZE, INPUT_SIZE):
            gray = gray.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.uint8)


def _layout_entries(names: list[str]) -> Iterator[tuple[str, str, str]]:
    """Yield (split, label, name) for every image under `<split>/<label>/` in a listing."""
    for name in names:
        parts = Path(name).parts
        if len(parts) < 3 or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        split, label = parts[-3].lower(), parts[-2].lower()
        if split in ("train", "test") and label in LABELS:
            yield split, label, name


def _layout_entries_or_fail(names: list[str], path: Path) -> list[tuple[str, str, str]]:
    entries = list(_layout_entries(names))
    if not entries:
        raise DataError(
            f"{path} holds no images in the Kaggle layout train/<emotion>/*.jpg "
            f"(emotions: {', '.join(LABELS)})"
        )
    return entries


def _as_splits(
    faces: dict[str, list[np.ndarray]], labels: dict[str, list[int]]
) -> dict[str, Split]:
    empty = np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.uint8)
    return {
        split: Split(
            np.stack(faces[split]) if faces[split] else empty,
            np.asarray(labels[split], dtype=np.int64),
        )
        for split in faces
    }


def _decode_entries(
    entries: list[tuple[str, str, str]], read: Callable[[str], bytes], limit: int | None
) -> dict[str, Split]:
    faces: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    taken: Counter[tuple[str, str]] = Counter()
    unreadable: list[str] = []
    for split, label, name in sorted(entries):
        if limit is not None and taken[split, label] >= limit:
            continue
        try:
            face = decode_face(read(name))
        except (UnidentifiedImageError, OSError, ValueError):
            unreadable.append(name)
            continue
        faces[split].append(face)
        labels[split].append(LABELS.index(label))
        taken[split, label] += 1
    _report_unreadable(unreadable, total=len(unreadable) + sum(taken.values()))
    return _as_splits(faces, labels)


def _report_unreadable(names: list[str], total: int) -> None:
    if not names:
        return
    shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
    message = f"{len(names)} of {total} images could not be decoded: {shown}"
    if len(names) > MAX_UNREADABLE_FRACTION * total:
        raise DataError(message + " (too many: is the data set damaged?)")
    log.warning("%s (skipped)", message)


def read_zip(path: Path, limit: int | None) -> dict[str, Split]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise DataError(f"{path} is not a readable zip archive: {error}") from error
    with archive:
        entries = _layout_entries_or_fail(archive.namelist(), path)
        return _decode_entries(entries, archive.read, limit)


def read_folder(path: Path, limit: int | None) -> dict[str, Split]:
    names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
    entries = _layout_entries_or_fail(names, path)
    return _decode_entries(entries, lambda name: (path / name).read_bytes(), limit)


def read_csv(path: Path, limit: int | None) -> dict[str, Split]:
    faces: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    taken: Counter[tuple[str, int]] = Counter()
    bad_rows: list[str] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"emotion", "pixels", "Usage"} <= set(reader.fieldnames):
            raise DataError(f"{path} is not the FER2013 CSV: expected columns emotion,pixels,Usage")
        for row_number, row in enumerate(reader, start=2):
            split = CSV_USAGE.get(row["Usage"])
            if split is None:
                continue
            try:
                label = CSV_EMOTION_TO_LABEL[int(row["emotion"])]
                pixels = np.array(row["pixels"].split(), dtype=np.uint8)
                if pixels.size != INPUT_SIZE * INPUT_SIZE:
                    raise ValueError
            except (KeyError, ValueError):
                bad_rows.append(f"row {row_number}")
                continue
            if limit is not None and taken[split, label] >= limit:
                continue
            faces[split].append(pixels.reshape(INPUT_SIZE, INPUT_SIZE))
            labels[split].append(label)
            taken[split, label] += 1
    _report_unreadable(bad_rows, total=len(bad_rows) + sum(taken.values()))
    return _as_splits(faces, labels)


def read_splits(path: Path, limit: int | None = None) -> tuple[dict[str, Split], str]:
    """Read `train` and `test` from any supported layout; also return the data's sha256."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"no data at {path}: pass the Kaggle zip, its unpacked folder or fer2013.csv "
            "(or fetch it with `python -m training download --out DIR`)"
        )
    if path.is_dir():
        splits, sha = read_folder(path, limit), folder_sha256(path)
    elif path.suffix.lower() == ".zip":
        splits, sha = read_zip(path, limit), file_sha256(path)
    elif path.suffix.lower() == ".csv":
        splits, sha = read_csv(path, limit), file_sha256(path)
    else:
        raise DataError(f"{path}: unknown layout; expected a .zip, a .csv or a folder")
    for split in ("train", "test"):
        empty = [label for label, n in splits[split].class_counts().items() if n == 0]
        if empty:
            raise DataError(f"{path}: the {split} split has no images of {', '.join(empty)}")
    return splits, sha


# --- splitting ----------------------------------------------------------------------------------


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Stratified, seeded hold-out from `train`: the split that drives every training decision."""
    from sklearn.model_selection import train_test_split

    train_idx, val_idx = train_test_split(
        np.arange(len(train)), test_size=fraction, stratify=train.y, random_state=seed
    )
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])


def load_dataset(
    path: Path, validation_fraction: float, seed: int, limit: int | None = None
) -> Dataset:
    splits, sha = read_splits(path, limit)
    train, validation = carve_validation(splits["train"], validation_fraction, seed)
    return Dataset(train, validation, splits["test"], sha256=sha, source=str(path))


def load_test_split(path: Path, limit: int | None = None) -> Split:
    return read_splits(path, limit)[0]["test"]


@dataclass(frozen=True)
class ValidationSplit:
    """Which faces a run held out of `train/`: two runs with equal ones held out the same faces.

    Recorded by every run (run.json) and carried by every exported model, so that export, the
    benchmarks and `compare` work on the run's own validation faces, never on faces it trained on.
    """

    dataset_sha256: str
    seed: int
    fraction: float
    limit: int | None

    def load(self, path: Path) -> Dataset:
        """`path` split as the run split it, once its fingerprint shows it is the run's file."""
        dataset = load_dataset(path, self.fraction, self.seed, self.limit)
        if dataset.sha256 != self.dataset_sha256:
            raise DataError(
                f"{path} is not the data set file the run was trained on (sha256 "
                f"{dataset.sha256[:12]}…, the run recorded {self.dataset_sha256[:12]}…), so its "
                "validation split would not be the run's. A zip, its unpacked folder and the CSV "
                "are fingerprinted differently: pass the very file the run was trained on."
            )
        return dataset

    def describe(self) -> str:
        limit = "all of train/" if self.limit is None else f"train/ limited to {self.limit} a class"
        return f"split seed {self.seed}, fraction {self.fraction}, {limit}"

    @classmethod
    def recorded(
        cls, dataset_sha256: str, config: dict[str, Any], training: dict[str, Any]
    ) -> ValidationSplit:
        """The split a run recorded: `config` is its config as a dict, `training` its run.json
        (or the training record an export carries). Runs from before `train.split_seed` split
        with their one `seed`."""
        return cls(
            dataset_sha256=dataset_sha256,
            seed=config["train"].get("split_seed", training["seed"]),
            fraction=config["train"]["validation_fraction"],
            limit=training.get("limit"),
        )


def copies_of(seen: Split, faces: np.ndarray) -> np.ndarray:
    """Which `faces` are pixel-for-pixel copies of a face in `seen`, as a boolean mask.

    FER2013 repeats images within `train/` and between `train/` and `test/` (7-8 % of held-out
    faces); a model recalls those rather than recognises them, so they flatter any score.
    """
    known = {face_fingerprint(face) for face in seen.x}
    return np.array([face_fingerprint(face) in known for face in faces], dtype=bool)


def face_fingerprint(face: np.ndarray) -> bytes:
    return hashlib.sha256(face.tobytes()).digest()
