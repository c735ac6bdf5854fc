"""`python -m training compare`: real exported models ranked on their own validation faces, and
the comparisons it must refuse because they would not be fair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from training.__main__ import main
from training.compare import Score, compare, mcnemar
from training.errors import CompareError
from training.train import train


@pytest.fixture(scope="module")
def two_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_zip: Path, smoke_config: Path
) -> list[Path]:
    """Two runs of one recipe and seed, so one validation split: one epoch against eight."""
    root = tmp_path_factory.mktemp("compare")
    return [
        train(tiny_zip, root / name, smoke_config, epochs=epochs)
        for name, epochs in (("one", 1), ("eight", 8))
    ]


def metadata_of(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def with_metadata(path: Path, out: Path, **changes: str | None) -> Path:
    """A copy of a real model with some metadata entries replaced (or removed, for None)."""
    model = onnx.load(str(path))
    kept = {p.key: p.value for p in model.metadata_props} | changes
    del model.metadata_props[:]
    for key, value in kept.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return out


def test_models_are_scored_on_the_faces_their_export_checked_and_ranked(
    two_models: list[Path], tiny_zip: Path
) -> None:
    split, scores = compare(two_models, tiny_zip)
    assert split.seed == 1337 and split.fraction == 0.1
    assert {score.path for score in scores} == set(two_models)
    for score in scores:
        # Export measured the int8 graph on the run's validation faces by its own route.
        quantization = json.loads(metadata_of(score.path)["emotion_quantization"])
        assert score.accuracy == pytest.approx(quantization["int8_accuracy"])
        assert len(score.correct) == quantization["faces"]
        assert score.nll > 0 and 0 <= score.ece <= 1
    ranks = [(-score.accuracy, score.nll) for score in scores]
    assert ranks == sorted(ranks)


def test_the_command_prints_the_ranking(
    two_models: list[Path], tiny_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "--data", str(tiny_zip), *map(str, two_models)]) == 0
    printed = capsys.readouterr().out
    assert "which none of these models trained on" in printed
    assert all(str(path) in printed for path in two_models)
    assert "1 against 2:" in printed and "McNemar exact p = " in printed


def test_models_validated_on_other_faces_are_not_compared(
    two_models: list[Path], tiny_zip: Path, tmp_path: Path
) -> None:
    training = json.loads(metadata_of(two_models[1])["emotion_training"])
    other_seed = json.dumps(training | {"seed": 7})
    reseeded = with_metadata(two_models[1], tmp_path / "seed7.onnx", emotion_training=other_seed)
    with pytest.raises(CompareError, match="validated on other faces"):
        compare([two_models[0], reseeded], tiny_zip)


def test_another_data_set_is_refused(two_models: list[Path], tiny_folder: Path) -> None:
    with pytest.raises(CompareError, match="is not the data set"):
        compare(two_models, tiny_folder)


def test_a_model_without_its_training_record_is_refused(
    two_models: list[Path], tiny_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = with_metadata(two_models[0], tmp_path / "bare.onnx", emotion_training=None)
    assert main(["compare", "--data", str(tiny_zip), str(bare), str(two_models[1])]) == 2
    assert "does not record the validation split" in capsys.readouterr().err


def test_a_model_named_twice_is_refused(two_models: list[Path], tiny_zip: Path) -> None:
    with pytest.raises(CompareError, match="named twice"):
        compare([two_models[0], two_models[0].parent / "." / two_models[0].name], tiny_zip)


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
    assert mcnemar(best, best).p_value == 1.0
