"""Reading FER2013 in each layout, honest splits, and clear errors for data that cannot be used."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from contract.emotion import LABELS
from tests.fixtures.training import PER_CLASS, Face, write_csv, write_folder, write_zip
from training.data import DataError, carve_validation, load_dataset, read_splits


@pytest.mark.parametrize("layout", ["tiny_zip", "tiny_folder", "tiny_csv"])
def test_every_layout_reads_to_the_same_arrays(layout: str, request: pytest.FixtureRequest) -> None:
    splits, sha = read_splits(request.getfixturevalue(layout))
    for split, count in PER_CLASS.items():
        assert splits[split].x.shape == (count * len(LABELS), 48, 48)
        assert splits[split].x.dtype == np.uint8
        assert splits[split].class_counts() == dict.fromkeys(LABELS, count)
    assert len(sha) == 64


# One known face per emotion: flat grey at a level of its own, which JPEG keeps within a few steps
# and the CSV keeps exactly, so any face read back names the emotion it was written as.
KNOWN_LEVEL = {
    "angry": 20,
    "disgust": 55,
    "fear": 90,
    "happy": 125,
    "sad": 160,
    "surprise": 195,
    "neutral": 230,
}


def known_faces() -> list[Face]:
    return [
        (split, label, 0, np.full((48, 48), level, np.uint8))
        for split in ("train", "test")
        for label, level in KNOWN_LEVEL.items()
    ]


def emotion_of_level(face: np.ndarray) -> str:
    (emotion,) = [e for e, level in KNOWN_LEVEL.items() if abs(face.mean() - level) < 5]
    return emotion


@pytest.mark.parametrize(
    ("write", "name"),
    [(write_zip, "fer2013.zip"), (write_folder, "fer2013"), (write_csv, "fer2013.csv")],
    ids=["zip", "folder", "csv"],
)
def test_a_known_face_of_each_emotion_is_read_with_its_own_label(
    write, name: str, tmp_path: Path
) -> None:
    splits, _ = read_splits(write(tmp_path / name, faces=known_faces()))
    for split in ("train", "test"):
        faces, labels = splits[split].x, splits[split].y
        read_as = {emotion_of_level(face): LABELS[y] for face, y in zip(faces, labels, strict=True)}
        assert read_as == {emotion: emotion for emotion in KNOWN_LEVEL}, split


def test_layouts_agree_on_pixels(tiny_zip: Path, tiny_folder: Path) -> None:
    from_zip, _ = read_splits(tiny_zip)
    from_folder, _ = read_splits(tiny_folder)
    np.testing.assert_array_equal(from_zip["train"].x, from_folder["train"].x)
    np.testing.assert_array_equal(from_zip["train"].y, from_folder["train"].y)


def test_csv_private_test_rows_are_never_read(tiny_csv: Path) -> None:
    splits, _ = read_splits(tiny_csv)
    # The PrivateTest rows are pure white: none may appear in any split.
    for split in splits.values():
        assert not (split.x == 255).all(axis=(1, 2)).any()
        assert len(split) == PER_CLASS["train" if split is splits["train"] else "test"] * 7


def test_limit_keeps_at_most_n_per_class_per_split(tiny_zip: Path) -> None:
    splits, _ = read_splits(tiny_zip, limit=3)
    assert splits["train"].class_counts() == dict.fromkeys(LABELS, 3)
    assert splits["test"].class_counts() == dict.fromkeys(LABELS, 3)


def test_validation_is_stratified_seeded_and_disjoint(tiny_zip: Path) -> None:
    first = load_dataset(tiny_zip, validation_fraction=0.25, seed=7)
    again = load_dataset(tiny_zip, validation_fraction=0.25, seed=7)
    np.testing.assert_array_equal(first.validation.x, again.validation.x)
    assert set(first.validation.class_counts().values()) == {3}  # 25 % of 12, every class
    train_rows = {row.tobytes() for row in first.train.x}
    assert not any(row.tobytes() in train_rows for row in first.validation.x)
    assert len(first.train) + len(first.validation) == PER_CLASS["train"] * len(LABELS)


def test_carve_validation_keeps_labels_with_their_images(tiny_zip: Path) -> None:
    splits, _ = read_splits(tiny_zip)
    _, validation = carve_validation(splits["train"], 0.25, seed=1)
    source = splits["train"]
    by_pixels = {row.tobytes(): label for row, label in zip(source.x, source.y, strict=True)}
    for row, label in zip(validation.x, validation.y, strict=True):
        assert by_pixels[row.tobytes()] == label


def test_missing_path_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no data at .* Kaggle zip"):
        read_splits(tmp_path / "missing.zip")


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "cat.jpg").write_bytes(b"not in the layout")
    with pytest.raises(DataError, match="Kaggle layout"):
        read_splits(tmp_path)
    other = tmp_path / "data.parquet"
    other.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="unknown layout"):
        read_splits(other)


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fer2013.zip"
    path.write_text("<html>login page</html>")
    with pytest.raises(DataError, match="not a readable zip"):
        read_splits(path)


def test_empty_class_is_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", {"train": 2, "test": 1})
    for image in (root / "train" / "disgust").iterdir():
        image.unlink()
    with pytest.raises(DataError, match="train split has no images of disgust"):
        read_splits(root)


def test_a_few_unreadable_images_are_counted_named_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_zip(tmp_path / "fer2013.zip", {"train": 120, "test": 2})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("train/happy/broken_1.jpg", b"\xff\xd8 truncated")
    splits, _ = read_splits(path)
    assert len(splits["train"]) == 120 * len(LABELS)
    assert "1 of" in caplog.text and "train/happy/broken_1.jpg" in caplog.text


def test_many_unreadable_images_stop_the_run(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "fer2013.zip", {"train": 2, "test": 1})
    with zipfile.ZipFile(path, "a") as archive:
        for index in range(5):
            archive.writestr(f"train/sad/broken_{index}.jpg", b"garbage")
    with pytest.raises(DataError, match=r"5 of \d+ images could not be decoded.*broken_0\.jpg"):
        read_splits(path)
