"""Configs: the shipped default is valid, and every mistake is named before training starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import DEFAULT_CONFIG, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_file_values_override_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[model]\nfilters = [8, 16]\n[train]\nepochs = 3\n"))
    assert config.model.filters == (8, 16)
    assert config.train.epochs == 3
    assert config.train.batch_size == 64  # untouched default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepocs = 3\n", "unknown keys ['epocs']"),
        ("[trian]\nepochs = 3\n", "unknown tables ['trian']"),
        ("[train]\nepochs = 0\n", "train.epochs must be >= 1"),
        ("[train]\nepochs = 'ten'\n", "train.epochs must be an integer"),
        ("[train]\nlearning_rate = -1\n", "train.learning_rate must be > 0"),
        ("[train]\noptimizer = 'rmsprop'\n", "train.optimizer must be 'sgd' or 'adamw'"),
        ("[model]\nfilters = 32\n", "model.filters must be a list"),
        ("[augment]\nflip = 1\n", "augment.flip must be true or false"),
        ("[augment]\nerasing = 1.5\n", "augment.erasing must be in [0, 1]"),
        ("[model]\ninput_crop = 48\n", "model.input_crop must be 0"),
        ("[model]\ninput_crop = 39\n", "model.input_crop must be 0"),
        ("[export]\ncrop_margin = 9.0\n", "export.crop_margin must be in [0.5, 3.0]"),
        ("[model]\nfilters = [8, 16]\nconvs_per_stage = [1]\n", "one per stage"),
        ("[model]\nconvs_per_stage = [1, 2, 'x', 2]\n", "must hold integers"),
        ("[train\n", "not valid TOML"),
        ("[train]\nswa_epochs = -1\n", "train.swa_epochs must be >= 0"),
        ("[train]\nswa_learning_rate = 0\n", "train.swa_learning_rate must be > 0"),
        ("[train]\ndistillation = 0\n", "train.distillation must be in"),
        ("[train]\nteacher = 3\n", "train.teacher must be a string"),
        ("[train]\nswa_epochs = 5\nschedule = 'plateau'\n", "swa_epochs needs schedule 'cosine'"),
        ("[train]\nswa_epochs = 5\nearly_stopping_patience = 3\n", "and no early stopping"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text))


def test_convolutions_can_differ_per_stage(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[model]\nconvs_per_stage = [1, 2, 2, 3]\n"))
    assert config.model.stage_convs() == (1, 2, 2, 3)
    assert load_config().model.stage_convs() == (2, 2, 2, 2)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEFAULT_CONFIG.parent.glob("*.toml") if p != DEFAULT_CONFIG),
    ids=lambda p: p.name,
)
def test_candidate_configs_load_and_differ_from_the_default(path: Path) -> None:
    """A candidate recipe waits hours for its run: a typo in it must fail here, not at its start."""
    assert load_config(path) != load_config()
