"""Stochastic weight averaging: the schedule, the running mean, its resumption and the batch-norm
statistics of the averaged network, each checked against numbers computed here by hand."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest

from training.averaging import ConstantAfter, WeightAverage, load_average, recompute_batch_norm
from training.config import load_config
from training.data import read_splits
from training.optimizer import make_optimizer
from training.run_dir import AVERAGED_WEIGHTS, BEST_WEIGHTS, WEIGHT_AVERAGE
from training.train import train


def test_the_learning_rate_follows_the_schedule_then_stays_constant() -> None:
    cosine = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=100, alpha=0.0)
    schedule = ConstantAfter(cosine, boundary_step=100, value=0.01)
    rates = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 50, 99, 100, 5000)]
    assert rates[:3] == pytest.approx([0.05, 0.025, float(cosine(99))], rel=1e-5)
    assert rates[3:] == pytest.approx([0.01, 0.01])


def test_a_model_saved_whole_with_the_shipped_optimizer_loads_with_its_schedule(
    tmp_path: Path,
) -> None:
    optimizer = make_optimizer(load_config(), steps_per_epoch=10)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=optimizer, loss="mse")
    model.save(tmp_path / "whole.keras")

    # `learning_rate` reads the current rate; the schedule object is `_learning_rate`
    loaded = keras.saving.load_model(tmp_path / "whole.keras").optimizer._learning_rate
    assert isinstance(loaded, ConstantAfter)
    steps = [0, 5, 10, 400, 799, 800, 5000]  # warm-up, cosine, then the averaging phase

    def rates(schedule) -> list[float]:
        return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]

    assert rates(loaded) == pytest.approx(rates(optimizer._learning_rate))
    assert rates(loaded)[-1] == pytest.approx(load_config().train.swa_learning_rate)


def tiny_regressor() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="dense")(inputs)
    model = keras.Model(inputs, keras.Model(inputs, outputs, name="inner")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


class RecordWeights(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.seen[epoch] = self.model.get_layer("inner").get_weights()


def fit(model: keras.Model, callbacks: list, epochs: int, initial_epoch: int = 0) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)), rng.normal(size=(32, 2))
    model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=callbacks)


def test_the_average_is_the_mean_of_the_epochs_from_the_start_on(tmp_path: Path) -> None:
    model, record = tiny_regressor(), RecordWeights()
    fit(model, [WeightAverage("inner", 2, tmp_path / "mean.npz"), record], epochs=5)
    mean, epochs = load_average(tmp_path / "mean.npz")
    assert epochs == [2, 3, 4]
    for index, averaged in enumerate(mean):
        by_hand = np.mean([record.seen[epoch][index] for epoch in (2, 3, 4)], axis=0)
        np.testing.assert_allclose(averaged, by_hand, rtol=1e-6)
        assert not np.allclose(averaged, record.seen[4][index])  # a mean, not the last epoch


def test_a_resumed_run_goes_on_averaging_and_never_counts_an_epoch_twice(tmp_path: Path) -> None:
    path, model, record = tmp_path / "mean.npz", tiny_regressor(), RecordWeights()
    fit(model, [WeightAverage("inner", 1, path), record], epochs=3)
    # The checkpoint missed epoch 2, so the resumed run trains it again: the average, which
    # already holds it, skips the repeat and takes epoch 3.
    fit(model, [WeightAverage("inner", 1, path), record], epochs=4, initial_epoch=2)
    mean, epochs = load_average(path)
    assert epochs == [1, 2, 3]
    assert len(mean) == 2
    assert np.isfinite(mean[0]).all()


def test_batch_norm_statistics_are_recomputed_over_all_the_images() -> None:
    inputs = keras.Input((4,))
    dropped = keras.layers.Dropout(0.5)(inputs)
    outputs = keras.layers.BatchNormalization(momentum=0.99)(dropped)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(1).normal(3.0, 2.0, size=(1000, 4)).astype(np.float32)
    recompute_batch_norm(model, images, batch_size=100)
    norm = model.layers[-1]
    np.testing.assert_allclose(norm.moving_mean.numpy(), images.mean(axis=0), rtol=1e-5)
    batch_variances = images.reshape(10, 100, 4).var(axis=1).mean(axis=0)
    np.testing.assert_allclose(norm.moving_variance.numpy(), batch_variances, rtol=1e-4)
    assert norm.momentum == 0.99 and model.layers[1].rate == 0.5  # put back as they were


def test_a_run_with_weight_averaging_ships_the_average(
    tmp_path: Path, tiny_zip: Path, smoke_config: Path
) -> None:
    config = tmp_path / "swa.toml"
    config.write_text(
        smoke_config.read_text().replace("swa_epochs = 0", "swa_epochs = 2")
        + 'swa_learning_rate = 0.02\n\n[export]\nquantize = "none"\n'
    )
    out = tmp_path / "run"
    model_path = train(tiny_zip, out, config)
    log = (out / "training_log.csv").read_text().splitlines()
    assert len(log) == 1 + 4  # header, 2 cosine epochs, 2 averaged ones
    assert load_average(out / WEIGHT_AVERAGE)[1] == [2, 3]

    from training.config import load_config
    from training.model import calibrated_probabilities, load_float32_classifier, logits_model

    faces = read_splits(tiny_zip)[0]["test"].x[:8, ..., None].astype(np.float32)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    shipped = session.run(None, {session.get_inputs()[0].name: faces})[0]
    prediction = json.loads((out / "run.json").read_text())["prediction"]

    def probabilities_of(weights: Path) -> np.ndarray:
        classifier = load_float32_classifier(load_config(config), weights)
        return keras.ops.convert_to_numpy(
            calibrated_probabilities(
                logits_model(classifier), faces, prediction["temperature"], prediction["flip_tta"]
            )
        )

    np.testing.assert_allclose(shipped, probabilities_of(out / AVERAGED_WEIGHTS), atol=1e-4)
    assert not np.allclose(shipped, probabilities_of(out / BEST_WEIGHTS), atol=1e-4)

    # The curves mark where averaging began and what the shipped average scores on validation.
    from training.evaluate import curve_marks, load_model

    marks = curve_marks(load_model(model_path))
    assert marks.averaging_from == 3
    assert marks.shipped_validation_accuracy == pytest.approx(
        prediction[
            "validation_accuracy_flip" if prediction["flip_tta"] else "validation_accuracy_plain"
        ]
    )


def test_batch_norm_statistics_are_those_of_the_augmented_images() -> None:
    """Statistics of the images as training saw them, not of the clean ones."""
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization()(inputs)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(2).normal(3.0, 0.5, size=(1000, 4)).astype(np.float32)
    noise = keras.layers.GaussianNoise(1.0, seed=3)  # active only in training mode
    recompute_batch_norm(model, images, batch_size=100, augment=noise)
    norm = model.layers[-1]
    batch_variances = images.reshape(10, 100, 4).var(axis=1).mean(axis=0)
    assert np.all(norm.moving_variance.numpy() > batch_variances + 0.5)  # 0.25 + 1, not 0.25
    np.testing.assert_allclose(norm.moving_mean.numpy(), images.mean(axis=0), atol=0.2)
