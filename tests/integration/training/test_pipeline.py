"""The real pipeline, end to end on tiny data: train -> export (with parity) -> evaluate ->
a model onnxruntime serves, plus resume and the refusals that protect a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contract.emotion import LABELS, ModelContract
from contract.provenance import machine_description
from tests.conftest import REPO_ROOT
from tests.fixtures.damage import float_weights_perturbed, last_layer_answering
from tests.fixtures.training import exported_in_float
from training import export as export_module
from training import quantize as quantize_module
from training import train as train_module
from training.__main__ import main
from training.callbacks import FitClock
from training.config import DEFAULT_CONFIG
from training.data import DataError, read_splits
from training.errors import ExportError, RunError
from training.run_dir import claimed, logged_epochs, recorded, session_seed
from training.status import run_status
from training.train import train

REPO = REPO_ROOT
EVIDENCE = (
    "metrics.json",
    "confusion_matrix.png",
    "reliability_diagram.png",
    "training_curves.png",
)


def session_for(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_a_run_leaves_a_servable_model_and_its_evidence(finished_run: Path, tiny_zip: Path) -> None:
    model = finished_run / "emotion.onnx"
    for name in EVIDENCE:
        assert (finished_run / name).stat().st_size > 0, name
    session = session_for(model)
    metadata = session.get_modelmeta().custom_metadata_map
    contract = ModelContract.from_metadata(metadata)
    assert contract.labels == LABELS
    assert session.get_inputs()[0].shape[1:] == [48, 48, 1]
    assert [output.name for output in session.get_outputs()] == ["probabilities"]
    assert json.loads(metadata["emotion_config"])["model"]["filters"] == [8, 16]
    assert len(metadata["emotion_dataset_sha256"]) == 64

    test = read_splits(tiny_zip)[0]["test"]
    batch = test.x[:5, ..., None].astype(np.float32) * contract.pixel_scale
    probabilities = session.run(None, {session.get_inputs()[0].name: batch})[0]
    assert probabilities.shape == (5, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    metrics = json.loads((finished_run / "metrics.json").read_text())
    carried = json.loads(metadata["emotion_metrics"])
    assert carried["test"]["accuracy"] == metrics["accuracy"]
    assert carried["test"]["machine"] == metrics["machine"] == machine_description()
    assert metrics["images"] == len(test)
    assert set(metrics["per_class"]) == set(LABELS)
    assert np.asarray(metrics["confusion_matrix"]).sum() == len(test)
    assert 0 <= metrics["expected_calibration_error"] <= 1


def test_run_file_records_what_was_chosen_on_validation(finished_run: Path) -> None:
    record = json.loads((finished_run / "run.json").read_text())
    assert record["prediction"]["temperature"] > 0
    assert isinstance(record["prediction"]["flip_tta"], bool)
    assert [session["precision"] for session in record["sessions"]] in (
        ["float32"],
        ["mixed_bfloat16"],
    )
    assert record["fit_seconds"] > 0


@pytest.mark.parametrize("layout", ["tiny_folder", "tiny_csv"])
def test_every_layout_trains(
    layout: str, request: pytest.FixtureRequest, tmp_path: Path, smoke_config: Path
) -> None:
    model = train(request.getfixturevalue(layout), tmp_path / "run", smoke_config, epochs=1)
    assert session_for(model).get_outputs()[0].shape[-1] == len(LABELS)


def test_resume_continues_from_the_last_epoch(
    tmp_path: Path, tiny_zip: Path, smoke_config: Path
) -> None:
    out = tmp_path / "run"
    train(tiny_zip, out, smoke_config, epochs=1)
    train(tiny_zip, out, smoke_config, epochs=3, resume=True)
    epochs = [line.split(",")[0] for line in (out / "training_log.csv").read_text().splitlines()]
    assert epochs == ["epoch", "0", "1", "2"]  # epoch 0 was not trained again
    sessions = json.loads((out / "run.json").read_text())["sessions"]
    assert [session["epochs_before"] for session in sessions] == [0, 1]
    assert all(session["code_version"] for session in sessions)
    assert sessions[-1]["machine"] == machine_description()
    # The second session draws new shuffles and augmentations, not the first session's again.
    assert session_seed(out, 1337) == 1337 + 3
    assert session_seed(tmp_path / "new", 1337) == 1337


def test_a_run_resumes_in_the_precision_of_its_new_machine(
    tmp_path: Path, tiny_zip: Path, smoke_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This project's machines change between sessions: a run started in float32 on an AVX2
    CPU goes on in bfloat16 on one with AVX-512 BF16 (the checkpoint holds float32 weights and
    optimiser state under either policy), and the run says which epochs ran in which."""
    out = tmp_path / "run"
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    train(tiny_zip, out, smoke_config, epochs=1)
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    try:
        model = train(tiny_zip, out, epochs=2, resume=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")  # the policy is global to the process
    sessions = json.loads((out / "run.json").read_text())["sessions"]
    assert [(s["epochs_before"], s["precision"]) for s in sessions] == [
        (0, "float32"),
        (1, "mixed_bfloat16"),
    ]
    assert len(logged_epochs(out)) == 2
    assert session_for(model).get_outputs()[0].shape[-1] == len(LABELS)


class SlowEpochs(keras.callbacks.Callback):
    """Epochs of at least `seconds`, and a session killed as epoch `killed_at` begins."""

    def __init__(self, seconds: float, killed_at: int | None = None) -> None:
        super().__init__()
        self.seconds, self.killed_at = seconds, killed_at

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch == self.killed_at:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        time.sleep(self.seconds)


def test_training_time_survives_a_session_killed_mid_run(tmp_path: Path) -> None:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 3)), np.zeros((8, 2))

    killed = [SlowEpochs(0.2, killed_at=2), FitClock(tmp_path)]
    session_began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, verbose=0, callbacks=killed)
    session_lasted = time.monotonic() - session_began
    first_session = recorded(tmp_path, "fit_seconds", 0.0)
    # Its two finished epochs (each slept 0.2 s), kept although it never finished, and no more
    # than the session lasted: the clock's own bookkeeping, whatever the machine's speed.
    assert 0.4 <= first_session <= session_lasted

    resumed = [SlowEpochs(0.2), FitClock(tmp_path)]
    model.fit(x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=resumed)
    assert recorded(tmp_path, "fit_seconds", 0.0) >= first_session + 0.2


def test_resume_keeps_the_recipe_and_split_the_run_started_with(
    tmp_path: Path, tiny_zip: Path, smoke_config: Path
) -> None:
    out = tmp_path / "run"
    train(tiny_zip, out, smoke_config, epochs=1)
    for changed in ({"seed": 7}, {"limit": 3}, {"config_path": DEFAULT_CONFIG}):
        with pytest.raises(RunError, match="was started with another"):
            train(tiny_zip, out, epochs=2, resume=True, **changed)
    # No --config: the run goes on with its own tiny recipe, not today's default.
    train(tiny_zip, out, epochs=2, resume=True)
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["model"]["filters"] == [8, 16]
    assert record["seed"] == 1337


def test_resume_refuses_another_data_file(
    finished_run: Path, tmp_path: Path, tiny_zip: Path, tiny_folder: Path
) -> None:
    """The same faces unpacked are another file: their validation split could differ, and a
    resumed run would train on faces it had held out."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    with pytest.raises(DataError, match="not the data set file the run was trained on"):
        train(tiny_folder, out, epochs=3, resume=True)
    assert len(logged_epochs(out)) == 2
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["source"] == str(tiny_zip)


def test_a_new_run_never_overwrites_an_old_one(finished_run: Path, tiny_zip: Path) -> None:
    with pytest.raises(RunError, match="already holds a run"):
        train(tiny_zip, finished_run)


HOLD_THE_RUN = """
import sys, time
from pathlib import Path
from training.run_dir import claimed
with claimed(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_run_in_use_is_refused_and_freed_when_its_process_dies(
    finished_run: Path, tmp_path: Path, tiny_zip: Path
) -> None:
    """A --resume started while the run still trains (in the background, or from a later session
    on the same machine) would write one checkpoint from two processes."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_RUN, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=rf"in use by a training run \(pid {holder.pid} on "):
            train(tiny_zip, out, epochs=3, resume=True)
        assert len(logged_epochs(out)) == 2
        assert f"training now: pid {holder.pid} on " in run_status(out)
    finally:
        holder.kill()
        holder.wait()
    # Killed without a word, it left its name in the lock file, yet reads as not training.
    assert f"pid {holder.pid}" in (out / "run.lock").read_text()
    assert "training now" not in run_status(out)
    with claimed(out):  # no stale lock to clear by hand
        assert str(os.getpid()) in (out / "run.lock").read_text()


def test_status_says_how_far_a_run_is_and_how_to_go_on(
    finished_run: Path, tmp_path: Path, tiny_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--run", str(finished_run)]) == 0
    finished = capsys.readouterr().out
    prediction = json.loads((finished_run / "run.json").read_text())["prediction"]
    assert f"{finished_run}: epoch 2 of 2 " in finished
    assert f"finished: validation accuracy {prediction['validation_accuracy_flip']:.4f}" in finished

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    record = json.loads((out / "run.json").read_text())
    del record["prediction"]  # as it reads between two epochs
    (out / "run.json").write_text(json.dumps(record))
    halfway = run_status(out)
    assert "h left" not in halfway  # both epochs are done: only the choices on validation remain
    assert f"--data {tiny_zip} --out {out} --resume`" in halfway

    assert main(["status", "--run", str(tmp_path / "nothing")]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_resume_needs_a_checkpoint(tmp_path: Path, tiny_zip: Path) -> None:
    with pytest.raises(RunError, match="no checkpoint"):
        train(tiny_zip, tmp_path / "empty", resume=True)


def operators(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def damaged_float_graph(convert):
    """`export.convert`, but the graph it hands back has noise on its weights while the Keras
    reference stays the network's own."""

    def converted(*args, **kwargs):
        proto, reference = convert(*args, **kwargs)
        float_weights_perturbed(proto)
        return proto, reference

    return converted


def corrupted_int8_graph(quantize_int8):
    """`quantize_int8`, but its last layer's int8 weights come out corrupted so that the graph
    answers, on every face, the emotion float answers least often (a barely trained network
    may answer nearly one emotion: any other would not do)."""

    def quantized(float_model: bytes, images: np.ndarray, *args, **kwargs) -> bytes:
        float_answers = quantize_module.onnx_probabilities(float_model, images).argmax(axis=1)
        rarest = int(np.bincount(float_answers, minlength=len(LABELS)).argmin())
        return last_layer_answering(quantize_int8(float_model, images, *args, **kwargs), rarest)

    return quantized


@pytest.mark.parametrize(
    ("module", "step", "damage", "message"),
    [
        (export_module, "convert", damaged_float_graph, "parity check failed"),
        (
            export_module,
            "quantize_int8",
            corrupted_int8_graph,
            "int8 quantisation changed the model too much",
        ),
    ],
    ids=["float graph unlike Keras", "int8 graph unlike float"],
)
def test_export_refuses_to_write_a_damaged_graph(
    finished_run: Path,
    tiny_zip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: object,
    step: str,
    damage,
    message: str,
) -> None:
    dataset = export_module.run_dataset(finished_run, tiny_zip)
    monkeypatch.setattr(module, step, damage(getattr(module, step)))
    with pytest.raises(ExportError, match=message):
        export_module.export_run(finished_run, tmp_path, dataset.test, dataset.validation)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary left behind


def test_the_shipped_graph_is_int8_and_says_what_that_cost(
    finished_run: Path, tiny_zip: Path
) -> None:
    model = finished_run / "emotion.onnx"
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators(model)
    metadata = session_for(model).get_modelmeta().custom_metadata_map
    report = json.loads(metadata["emotion_quantization"])
    assert report["type"] == "int8"
    assert report["recipe"] == asdict(quantize_module.QuantizationRecipe())
    assert report["recipe"]["weight_bits"] == 7 and report["recipe"]["float_first_convolution"]
    assert report["agreement"] >= quantize_module.MIN_AGREEMENT
    assert report["kernel_agreement"] >= quantize_module.MIN_KERNEL_AGREEMENT
    assert report["faces"] == len(export_module.run_dataset(finished_run, tiny_zip).validation)


def test_quantize_none_exports_float32(finished_run: Path, tiny_zip: Path, tmp_path: Path) -> None:
    model = exported_in_float(finished_run, tiny_zip, tmp_path)
    assert "QuantizeLinear" not in operators(model)
    assert "emotion_quantization" not in session_for(model).get_modelmeta().custom_metadata_map


def test_parity_check_catches_a_different_graph(finished_run: Path, tiny_zip: Path) -> None:
    """The check compares against Keras for real: a reference at another temperature fails."""
    from training.config import config_from_dict
    from training.run_dir import BEST_WEIGHTS
    from training.train import load_float32_classifier

    record = json.loads((finished_run / "run.json").read_text())
    classifier = load_float32_classifier(
        config_from_dict(record["config"]), finished_run / BEST_WEIGHTS
    )
    faces = read_splits(tiny_zip)[0]["test"].x[:16]
    proto, reference = export_module.convert(classifier, 1.0, False, opset=17)
    assert export_module.check_parity(proto.SerializeToString(), reference, faces) <= 1e-4
    _, sharper = export_module.convert(classifier, 0.05, False, opset=17)
    with pytest.raises(ExportError, match="parity check failed"):
        export_module.check_parity(proto.SerializeToString(), sharper, faces)


def test_export_then_evaluate_stamp_ships_a_model_from_a_run(
    finished_run: Path, tiny_zip: Path, tmp_path: Path
) -> None:
    """The two commands that re-ship a finished run after an export change."""
    model = tmp_path / "emotion.onnx"
    result = run_cli("export", "--run", str(finished_run), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    metadata = session_for(model).get_modelmeta().custom_metadata_map
    assert ModelContract.from_metadata(metadata)
    assert "test" not in json.loads(metadata["emotion_metrics"])

    evidence = tmp_path / "evidence"
    arguments = ["--model", str(model), "--data", str(tiny_zip), "--out", str(evidence)]
    result = run_cli("evaluate", *arguments, "--stamp")
    assert result.returncode == 0, result.stderr
    carried = json.loads(session_for(model).get_modelmeta().custom_metadata_map["emotion_metrics"])
    written = json.loads((evidence / "metrics.json").read_text())
    assert carried["test"]["accuracy"] == written["accuracy"]


def test_export_refuses_data_other_than_the_runs_own(finished_run: Path, tmp_path: Path) -> None:
    """Another file would carve another validation split, and the int8 check would use it."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    record = json.loads((run / "run.json").read_text())
    record["data"]["sha256"] = "0" * 64
    (run / "run.json").write_text(json.dumps(record))
    result = run_cli("export", "--run", str(run), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "is not the data set" in result.stderr
    assert not (tmp_path / "emotion.onnx").exists()


def test_evaluate_command_prints_and_writes_metrics(
    finished_run: Path, tiny_zip: Path, tmp_path: Path
) -> None:
    model = finished_run / "emotion.onnx"
    result = run_cli(
        "evaluate", "--model", str(model), "--data", str(tiny_zip), "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout
    for name in EVIDENCE:
        assert (tmp_path / name).exists(), name


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "/nowhere/fer2013.zip", "--out", "{tmp}/run"], "no data at"),
        (
            ["train", "--data", "{zip}", "--out", "{tmp}/run", "--config", "{tmp}/bad.toml"],
            "unknown keys ['epocs']",
        ),
        (["export", "--run", "{tmp}"], "is not a run directory"),
    ],
)
def test_cli_mistakes_get_one_clear_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, tiny_zip: Path
) -> None:
    (tmp_path / "bad.toml").write_text("[train]\nepocs = 3\n")
    result = run_cli(*(arg.format(tmp=tmp_path, zip=tiny_zip) for arg in args))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_epochs_override_shorter_than_the_warm_up_still_runs(
    tmp_path: Path, tiny_zip: Path, smoke_config: Path
) -> None:
    config = tmp_path / "warm.toml"
    recipe = smoke_config.read_text().replace("\nepochs = 2", "\nepochs = 5")
    config.write_text(recipe.replace("warmup_epochs = 0", "warmup_epochs = 2"))
    model = train(tiny_zip, tmp_path / "run", config, epochs=1)
    assert model.exists()


def test_a_run_on_crops_ships_a_model_of_whole_faces(
    tmp_path: Path, tiny_zip: Path, smoke_config: Path
) -> None:
    """Trained on 32x32 crops and weight-averaged, exported with its parity check: the graph
    takes the service's 48x48 faces, and their borders do not change its answer."""
    config = tmp_path / "crops.toml"
    recipe = smoke_config.read_text().replace("[model]\n", "[model]\ninput_crop = 32\n")
    recipe = recipe.replace("swa_epochs = 0", "swa_epochs = 1")
    config.write_text(recipe + '\n[export]\nquantize = "none"\n')
    model = train(tiny_zip, tmp_path / "run", config)
    session = session_for(model)
    assert session.get_inputs()[0].shape[1:] == [48, 48, 1]
    faces = (
        export_module.run_dataset(tmp_path / "run", tiny_zip)
        .test.x[:4, ..., None]
        .astype(np.float32)
    )
    framed = faces.copy()
    framed[:, :8] = framed[:, -8:] = 0
    answer = lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]  # noqa: E731
    np.testing.assert_allclose(answer(framed), answer(faces), atol=1e-6)
