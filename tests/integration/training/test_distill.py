"""Distillation from an exported model: the targets it makes, the refusals that keep a teacher
from leaking validation labels, and a whole tiny run taught by a real exported model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.onnx_metadata import metadata_of
from training.distill import distilled_targets
from training.errors import RunError, TeacherError
from training.train import train


def teacher_config(tmp_path: Path, smoke_config: Path, teacher: Path, weight: float) -> Path:
    text = smoke_config.read_text().replace(
        "[train]\n", f'[train]\nteacher = "{teacher}"\ndistillation = {weight}\n'
    )
    path = tmp_path / "distil.toml"
    path.write_text(text)
    return path


def test_targets_mix_labels_and_teacher_and_stay_distributions() -> None:
    teacher = np.array([[0.7, 0.2, 0.1, 0, 0, 0, 0], [0, 0, 0, 0.5, 0.5, 0, 0]], np.float32)
    labels = np.eye(7, dtype=np.float32)[[1, 3]]
    targets = distilled_targets(labels, teacher, weight=0.5)
    np.testing.assert_allclose(targets[0, :3], [0.35, 0.6, 0.05], atol=1e-6)
    np.testing.assert_allclose(targets[1, 3:5], [0.75, 0.25], atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(distilled_targets(labels, teacher, 1.0), teacher)


@pytest.fixture(scope="module")
def distilled_run(
    tmp_path_factory: pytest.TempPathFactory,
    finished_run: Path,
    tiny_zip: Path,
    smoke_config: Path,
) -> tuple[Path, Path]:
    """A tiny run taught by the tiny exported model of `finished_run` (same data and split)."""
    root = tmp_path_factory.mktemp("distil")
    teacher = shutil.copy(finished_run / "emotion.onnx", root / "teacher.onnx")
    out = root / "run"
    train(tiny_zip, out, teacher_config(root, smoke_config, Path(teacher), 0.5))
    return out, Path(teacher)


def test_a_taught_run_exports_and_names_its_teacher(distilled_run: tuple[Path, Path]) -> None:
    import hashlib

    out, teacher = distilled_run
    teacher_id = hashlib.sha256(teacher.read_bytes()).hexdigest()
    recorded = json.loads((out / "run.json").read_text())["teacher"]
    assert recorded["model_id"] == teacher_id
    assert 0 <= recorded["label_agreement"] <= 1
    metadata = metadata_of(out / "emotion.onnx")
    assert json.loads(metadata["emotion_training"])["teacher"]["model_id"] == teacher_id


def test_a_teacher_that_held_out_other_faces_is_refused(
    finished_run: Path, tiny_zip: Path, smoke_config: Path, tmp_path: Path
) -> None:
    # A real teacher trained on all of train/; this run keeps 10 faces a class, so it carves
    # another validation split, some of whose faces the teacher trained on.
    config = teacher_config(tmp_path, smoke_config, finished_run / "emotion.onnx", 0.5)
    with pytest.raises(TeacherError, match="held out other faces"):
        train(tiny_zip, tmp_path / "run", config, limit=10)
    assert not (tmp_path / "run" / "training_log.csv").exists()


def test_a_missing_teacher_is_refused_before_any_data_is_read(
    smoke_config: Path, tmp_path: Path
) -> None:
    config = teacher_config(tmp_path, smoke_config, tmp_path / "nowhere.onnx", 0.5)
    with pytest.raises(TeacherError, match="no model file"):
        train(tmp_path / "no-data.zip", tmp_path / "run", config)


def test_a_resumed_run_refuses_a_teacher_swapped_under_it(
    distilled_run: tuple[Path, Path], tiny_zip: Path, tmp_path: Path
) -> None:
    out, _ = distilled_run
    copy = shutil.copytree(out, tmp_path / "run")
    record = json.loads((copy / "run.json").read_text())
    record["teacher"]["model_id"] = "0" * 64
    (copy / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunError, match="targets would change mid-run"):
        train(tiny_zip, copy, epochs=3, resume=True)
