"""The GPU workflow on CPU: train with Keras on JAX where TensorFlow cannot be imported, then
export and evaluate that run here, with TensorFlow, into a model the service loads; or finish
there a run that a CPU started here, which is how a long CPU run ends when a GPU is lent.

The GPU machine has JAX and no TensorFlow (and need not have onnxruntime); blocking those imports
in the training process makes this one the same, so any of them on the training path fails this
test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx

from contract.emotion import TRAINING_KEY
from service.model import EmotionModel
from training.data import read_splits
from training.export import export_run, run_dataset
from training.run_dir import AVERAGED_WEIGHTS, logged_epochs


def train_on_jax(
    python_without_tensorflow: Path, repo_root: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    finished = subprocess.run(
        [str(python_without_tensorflow), "-m", "training", "train", *args],
        cwd=repo_root,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished


def test_a_run_trained_on_jax_without_tensorflow_exports_here(
    tmp_path: Path,
    tiny_zip: Path,
    smoke_config: Path,
    repo_root: Path,
    python_without_tensorflow: Path,
) -> None:
    config = tmp_path / "swa.toml"
    recipe = smoke_config.read_text().replace("swa_epochs = 0", "swa_epochs = 1")
    config.write_text(recipe + '\n[export]\nquantize = "none"\n')
    out = tmp_path / "run"
    finished = train_on_jax(
        python_without_tensorflow,
        repo_root,
        *("--data", str(tiny_zip), "--out", str(out), "--config", str(config)),
    )
    assert f"python -m training export --run {out}" in finished.stdout
    record = json.loads((out / "run.json").read_text())
    assert [session["backend"] for session in record["sessions"]] == ["jax"]
    assert "temperature" in record["prediction"]
    assert (out / AVERAGED_WEIGHTS).exists()
    assert not (out / "emotion.onnx").exists()

    dataset = run_dataset(out)
    model_path = export_run(out, out, parity=dataset.test, validation=dataset.validation)
    model = EmotionModel.load(model_path)
    assert model.training.config["train"]["swa_epochs"] == 1
    probabilities = model.predict(read_splits(tiny_zip)[0]["test"].x[:4])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_run_started_on_tensorflow_goes_on_on_jax(
    finished_run: Path,
    tmp_path: Path,
    tiny_zip: Path,
    repo_root: Path,
    python_without_tensorflow: Path,
) -> None:
    """A checkpoint (weights and optimiser state) is a Keras file that either backend reads, so
    a long CPU run can finish on a GPU machine: two epochs here, the third on JAX."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)

    finished = train_on_jax(
        python_without_tensorflow,
        repo_root,
        *("--data", str(tiny_zip), "--out", str(out), "--resume", "--epochs", "3"),
    )
    assert "is an earlier session's export, without this session's epochs" in finished.stderr
    record = json.loads((out / "run.json").read_text())
    assert [(s["epochs_before"], s["backend"]) for s in record["sessions"]] == [
        (0, "tensorflow"),
        (2, "jax"),
    ]
    assert len(logged_epochs(out)) == 3
    dataset = run_dataset(out)
    exported = export_run(out, out, parity=dataset.test, validation=dataset.validation)
    metadata = onnx.load(str(exported)).metadata_props
    training = json.loads(next(entry.value for entry in metadata if entry.key == TRAINING_KEY))
    assert [s["backend"] for s in training["sessions"]] == ["tensorflow", "jax"]
