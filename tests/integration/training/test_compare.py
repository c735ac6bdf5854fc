"""`python -m training compare`: real exported models ranked on their own runs' validation faces,
and the comparisons it must refuse because they would not be fair."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from contract.emotion import QUANTIZATION_KEY, TRAINING_KEY
from service.model import EmotionModel
from tests.fixtures.onnx_metadata import metadata_of, with_metadata
from tests.fixtures.training import write_zip
from training.__main__ import main
from training.compare import Score, compare, mcnemar
from training.data import DataError, Split, copies_of
from training.errors import CompareError
from training.export import read_run, run_dataset
from training.run_dir import run_validation_split
from training.train import train


@pytest.fixture(scope="module")
def two_runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_zip: Path, smoke_config: Path
) -> list[Path]:
    """Two runs of one recipe and seed, so one validation split: one epoch against eight."""
    root = tmp_path_factory.mktemp("compare")
    for name, epochs in (("one", 1), ("eight", 8)):
        train(tiny_zip, root / name, smoke_config, epochs=epochs)
    return [root / "one", root / "eight"]


@pytest.fixture(scope="module")
def two_models(two_runs: list[Path]) -> list[Path]:
    return [run / "emotion.onnx" for run in two_runs]


def test_models_are_scored_on_their_runs_validation_faces_and_ranked(
    two_runs: list[Path], two_models: list[Path], tiny_zip: Path
) -> None:
    comparison = compare(two_models, tiny_zip)
    for run in two_runs:
        assert comparison.split == run_validation_split(read_run(run))
    validation = run_dataset(two_runs[0]).validation
    assert comparison.copies_left_out == 0  # the generated faces have no copies
    for score in comparison.scores:
        # Face by face, the answers of the served graph on the run's own validation faces...
        predicted = EmotionModel.load(score.path).predict(validation.x).argmax(axis=1)
        np.testing.assert_array_equal(score.correct, predicted == validation.y)
        # ...which export, by its own route, scored when it checked the int8 graph.
        quantization = json.loads(metadata_of(score.path)[QUANTIZATION_KEY])
        assert score.accuracy == pytest.approx(quantization["int8_accuracy"])
        assert score.nll > 0 and 0 <= score.ece <= 1
    ranks = [(-score.accuracy, score.nll) for score in comparison.scores]
    assert ranks == sorted(ranks)


def test_the_command_prints_the_ranking(
    two_models: list[Path], tiny_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "--data", str(tiny_zip), *map(str, two_models)]) == 0
    printed = capsys.readouterr().out
    assert "copies of training faces left out" in printed
    assert all(str(path) in printed for path in two_models)
    assert "1 against 2: accuracy gap" in printed and "McNemar exact p = " in printed


def test_validation_copies_of_training_faces_are_found() -> None:
    rng = np.random.default_rng(0)
    seen = Split(rng.integers(0, 256, (5, 48, 48), dtype=np.uint8), np.zeros(5, dtype=np.int64))
    faces = rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)
    faces[2] = seen.x[3]
    faces[3] = seen.x[3].copy()
    faces[3][0, 0] ^= 1  # one pixel off is another face
    np.testing.assert_array_equal(copies_of(seen, faces), [False, False, True, False])


def test_models_validated_on_other_faces_are_not_compared(
    two_models: list[Path], tiny_zip: Path, smoke_config: Path, tmp_path: Path
) -> None:
    """A real model of the same recipe, trained on 10 faces a class of the same file: its
    validation faces are not the others', and some of theirs were its training faces."""
    train(tiny_zip, tmp_path / "fewer", smoke_config, epochs=1, limit=10)
    with pytest.raises(CompareError, match="validated on other faces"):
        compare([two_models[0], tmp_path / "fewer" / "emotion.onnx"], tiny_zip)


def test_another_data_set_is_refused(two_models: list[Path], tmp_path: Path) -> None:
    other = write_zip(tmp_path / "other.zip", {"train": 13, "test": 4})
    with pytest.raises(DataError, match="is not the data set file"):
        compare(two_models, other)


def test_the_same_faces_in_another_layout_are_refused_too(
    two_models: list[Path], tiny_folder: Path
) -> None:
    """A folder is fingerprinted by its files, a zip by its bytes: the message says so."""
    with pytest.raises(DataError, match="fingerprinted differently"):
        compare(two_models, tiny_folder)


def test_a_model_without_its_training_record_is_refused(
    two_models: list[Path], tiny_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = with_metadata(two_models[0], tmp_path / "bare.onnx", {TRAINING_KEY: None})
    assert main(["compare", "--data", str(tiny_zip), str(bare), str(two_models[1])]) == 2
    error = capsys.readouterr().err
    assert "does not record the validation split" in error and TRAINING_KEY in error


def test_an_unreadable_model_is_one_line_not_a_traceback(
    two_models: list[Path], tiny_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.onnx"
    assert main(["compare", "--data", str(tiny_zip), str(missing), str(two_models[0])]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no model file" in error and "Traceback" not in error


def test_one_model_under_two_names_is_refused(
    two_models: list[Path], tiny_zip: Path, tmp_path: Path
) -> None:
    copy = shutil.copy(two_models[0], tmp_path / "copy.onnx")
    with pytest.raises(CompareError, match="are the same model"):
        compare([two_models[0], Path(copy)], tiny_zip)


def scored(correct: list[bool]) -> Score:
    return Score(Path("m.onnx"), "id", 0.0, 0.0, 0.0, 0.0, np.array(correct))


def test_mcnemar_counts_only_the_faces_where_the_two_disagree() -> None:
    # 10 faces only the best gets right, 2 only the other, 5 both: two-sided exact binomial
    # P(X <= 2 or X >= 10 | n=12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    best = scored([True] * 10 + [False] * 2 + [True] * 5)
    other = scored([False] * 10 + [True] * 2 + [True] * 5)
    difference = mcnemar(best, other)
    assert (difference.only_best, difference.only_this) == (10, 2)
    assert difference.p_value == pytest.approx(2 * 79 / 4096)
    assert difference.gap == pytest.approx(8 / 17)
    # Paired standard error: sqrt(b + c - (b - c)^2 / n) / n.
    assert difference.margin == pytest.approx(1.96 * np.sqrt(12 - 64 / 17) / 17)
    same = mcnemar(best, best)
    assert (same.p_value, same.gap, same.margin) == (1.0, 0.0, 0.0)
