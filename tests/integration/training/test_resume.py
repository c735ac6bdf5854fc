"""Resume, for real: a run killed mid-way and resumed, from its full checkpoint or from the trimmed
state carried through git, goes on from the very state it saved: weights, optimiser, weight
average and best-so-far. These check the state itself, not only the bookkeeping."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.fixtures.training import run_killed_after
from training.averaging import WeightAverage, load_average
from training.callbacks import SaveBestClassifier, make_callbacks
from training.carry import BEST_STATE, MAX_CARRIED_BYTES, restore_trimmed, trim
from training.config import config_from_dict
from training.errors import RunError
from training.optimizer import compiled_trainer
from training.run_dir import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    LOG_FILE,
    RUN_FILE,
    TRIMMED_STATE,
    WEIGHT_AVERAGE,
    best_logged_accuracy,
    logged_epochs,
)
from training.train import train

REPO = REPO_ROOT

# Tiny, with weight averaging from epoch 3 on, and long enough that a kill lands mid-run.
AVERAGING_RECIPE = """
[model]
filters = [8, 16]
convs_per_stage = 1
dense_units = 16

[train]
epochs = 3
swa_epochs = 60
batch_size = 32
warmup_epochs = 0
"""
KILL_AFTER_EPOCHS = 6


def weights_in(checkpoint_file: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The layer and optimiser arrays of a Keras checkpoint file, read with h5py directly."""
    layers: list[np.ndarray] = []
    optimiser: list[np.ndarray] = []

    def visit(name: str, item: h5py.Dataset | h5py.Group) -> None:
        if isinstance(item, h5py.Dataset):
            (optimiser if name.startswith("optimizer/") else layers).append(item[()])

    with h5py.File(checkpoint_file) as handle:
        handle.visititems(visit)
    return layers, optimiser


def fresh_trainer(run_dir: Path) -> keras.Model:
    config = config_from_dict(json.loads((run_dir / RUN_FILE).read_text())["config"])
    keras.mixed_precision.set_dtype_policy("float32")
    return compiled_trainer(config, steps_per_epoch=3)


def as_multiset(arrays: list[np.ndarray]) -> list[tuple[tuple[int, ...], float]]:
    """Arrays named by shape and sum, sorted: comparable whatever order each reader used."""
    return sorted((a.shape, round(float(np.asarray(a, np.float64).sum()), 2)) for a in arrays)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory, tiny_zip: Path) -> Path:
    """A run of the averaging recipe, killed (SIGKILL, no chance to tidy up) a few epochs into
    its weight averaging: what a working period leaves when it ends mid-run."""
    out = run_killed_after(
        KILL_AFTER_EPOCHS, tiny_zip, AVERAGING_RECIPE, tmp_path_factory.mktemp("killed")
    )
    assert len(logged_epochs(out)) < 63, "killed mid-run, not after it finished"
    return out


def test_trimmed_state_is_half_precision_without_momentum(killed_run: Path, tmp_path: Path):
    carried = trim(killed_run, tmp_path / "carried")
    names = sorted(path.name for path in carried.iterdir())
    assert names == sorted([TRIMMED_STATE, WEIGHT_AVERAGE, RUN_FILE, LOG_FILE])
    assert sum(path.stat().st_size for path in carried.iterdir()) < MAX_CARRIED_BYTES

    layers, optimiser = weights_in(killed_run / CHECKPOINT_DIR / "latest.weights.h5")
    assert any(np.abs(m).max() > 0 for m in optimiser[1:]), "the checkpoint had momentum"
    with np.load(carried / TRIMMED_STATE) as saved:
        trimmed = [saved[key] for key in saved.files if key.startswith("weight_")]
        assert int(saved["epoch"]) == len(logged_epochs(killed_run))
    assert all(a.dtype == np.float16 for a in trimmed)
    # Exactly the layers' arrays (no optimiser slot), each equal to its float32 original.
    assert len(trimmed) == len(layers)
    assert as_multiset(trimmed) == as_multiset([a.astype(np.float16) for a in layers])

    mean, epochs = load_average(killed_run / WEIGHT_AVERAGE)
    carried_mean, carried_epochs = load_average(carried / WEIGHT_AVERAGE)
    assert carried_epochs == epochs and epochs[0] == 3
    for full, small in zip(mean, carried_mean, strict=True):
        assert small.dtype == np.float16
        np.testing.assert_allclose(small, full, rtol=1e-3, atol=1e-4)


def test_restore_from_trimmed_state_puts_back_what_was_saved(killed_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(trim(killed_run, tmp_path / "carried"), run)
    model = fresh_trainer(run)
    with np.load(run / TRIMMED_STATE) as saved:
        expected = [saved[f"weight_{i}"].astype(np.float32) for i in range(len(model.weights))]
    done = len(logged_epochs(killed_run))

    assert restore_trimmed(run, model, steps_per_epoch=3) == done
    for restored, saved in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(restored, saved)
    assert int(model.optimizer.iterations.numpy()) == done * 3  # the schedule goes on from here
    momenta = [v.numpy() for v in model.optimizer.variables[1:]]
    assert momenta and all(not m.any() for m in momenta)  # rebuilt from zero, by design

    config = config_from_dict(json.loads((run / RUN_FILE).read_text())["config"])
    callbacks = make_callbacks(config, run, best_logged_accuracy(run))
    average = next(c for c in callbacks if isinstance(c, WeightAverage))
    best = next(c for c in callbacks if isinstance(c, SaveBestClassifier))
    average.set_model(model)
    average.on_train_begin()
    saved_mean, saved_epochs = load_average(killed_run / WEIGHT_AVERAGE)
    assert average.epochs == saved_epochs
    for restored, saved in zip(average.mean, saved_mean, strict=True):
        np.testing.assert_allclose(restored, saved, rtol=1e-3, atol=1e-4)
    logged = [float(row["val_accuracy"]) for row in logged_epochs(killed_run)]
    assert best.best == max(logged)


def test_resume_from_the_full_checkpoint_restores_momentum_and_average(
    killed_run: Path, tmp_path: Path
):
    """The same machine, the next day: Keras's own checkpoint brings back everything, momentum
    included, through the run's own callbacks."""
    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    layers, optimiser = weights_in(run / CHECKPOINT_DIR / "latest.weights.h5")
    model = fresh_trainer(run)
    config = config_from_dict(json.loads((run / RUN_FILE).read_text())["config"])
    for callback in make_callbacks(config, run, best_logged_accuracy(run)):
        callback.set_model(model)
        callback.on_train_begin()
        if isinstance(callback, WeightAverage):
            assert callback.epochs == load_average(killed_run / WEIGHT_AVERAGE)[1]
    assert as_multiset(model.get_weights()) == as_multiset(layers)
    assert as_multiset([v.numpy() for v in model.optimizer.variables]) == as_multiset(optimiser)
    assert model._initial_epoch in (len(logged_epochs(run)), len(logged_epochs(run)) + 1)


def test_a_killed_run_carried_through_git_finishes_where_it_left_off(
    killed_run: Path, tmp_path: Path, tiny_zip: Path
):
    """Only the trimmed folder survives (a new machine): copied into a new run directory, the
    run goes on from its epoch, with its record, its schedule and its average, and ships.

    Where it cannot match an uninterrupted run: the random streams (shuffling, augmentation) are
    reseeded per session, and momentum restarts from zero, so the epochs after the kill see other
    batches than an uninterrupted run would, and the weights diverge from there on.
    """
    done = len(logged_epochs(killed_run))
    run = tmp_path / "run"
    shutil.copytree(trim(killed_run, tmp_path / "carried"), run)
    model = train(tiny_zip, run, resume=True)

    epochs = [int(row["epoch"]) for row in logged_epochs(run)]
    assert epochs == list(range(63))  # nothing trained twice, nothing skipped
    sessions = json.loads((run / RUN_FILE).read_text())["sessions"]
    assert [s["epochs_before"] for s in sessions] == [0, done]
    assert load_average(run / WEIGHT_AVERAGE)[1] == list(range(3, 63))
    losses = [float(row["loss"]) for row in logged_epochs(run)]
    # A fresh network would start again near the first epoch's loss; the restored one does not.
    assert losses[done] < (losses[0] + losses[done - 1]) / 2
    assert model is not None and model.exists()


def test_a_best_epoch_run_carries_its_best_classifier(finished_run: Path, tmp_path: Path):
    """Without weight averaging the best epoch is what ships, so it is carried too."""
    carried = trim(finished_run, tmp_path / "carried")
    assert (carried / BEST_STATE).exists() and not (carried / WEIGHT_AVERAGE).exists()
    run = tmp_path / "run"
    shutil.copytree(carried, run)
    model = fresh_trainer(run)
    restore_trimmed(run, model, steps_per_epoch=3)
    classifier = fresh_trainer(finished_run).get_layer("classifier")
    classifier.load_weights(str(finished_run / BEST_WEIGHTS))
    restored = fresh_trainer(run).get_layer("classifier")
    restored.load_weights(str(run / BEST_WEIGHTS))
    for original, back in zip(classifier.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_allclose(back, original, rtol=1e-3, atol=1e-4)


def test_trim_refuses_a_run_without_a_checkpoint_and_resume_a_mismatched_state(
    killed_run: Path, tmp_path: Path, tiny_zip: Path
):
    with pytest.raises(RunError, match="no checkpoint to trim"):
        trim(tmp_path, tmp_path / "carried")
    run = tmp_path / "run"
    shutil.copytree(trim(killed_run, tmp_path / "carried"), run)
    rows = (run / LOG_FILE).read_text().splitlines()
    (run / LOG_FILE).write_text("\n".join(rows[:-1]) + "\n")  # the log lost its last epoch
    with pytest.raises(RunError, match="trim the run again"):
        train(tiny_zip, run, resume=True)
    assert not os.path.exists(run / CHECKPOINT_DIR)
