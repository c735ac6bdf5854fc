"""Stochastic weight averaging (Izmailov et al., 2018, arXiv:1803.05407).

After the cosine schedule has settled the weights in one minimum, training goes on for a few epochs
at a constant learning rate, which walks them around that minimum; the mean of the weights at the
end of each of those epochs sits nearer its flat centre than any single point does, and such flat
minima generalise better. The mean of the weights is not the mean of the activations, so batch-norm
statistics are recomputed for the averaged network before it is used.

Backend-neutral Keras 3 and numpy: no TensorFlow import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="training")
class ConstantAfter(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` for the first `boundary_step` steps, then `value` for ever.

    Serialisable both ways, so that a compiled model saved whole (`model.save("x.keras")`) loads
    again with its optimizer; the run's own checkpoints hold weights and optimizer variables only.
    """

    def __init__(
        self,
        schedule: keras.optimizers.schedules.LearningRateSchedule,
        boundary_step: int,
        value: float,
    ) -> None:
        self.schedule, self.boundary_step, self.value = schedule, boundary_step, value

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        scheduled = keras.ops.cast(self.schedule(step), "float32")
        return keras.ops.where(step < self.boundary_step, scheduled, self.value)

    def get_config(self) -> dict:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "boundary_step": self.boundary_step,
            "value": self.value,
        }

    @classmethod
    def from_config(cls, config: dict) -> ConstantAfter:
        schedule = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(schedule, config["boundary_step"], config["value"])


class WeightAverage(keras.callbacks.Callback):
    """Keep the running mean of a layer's weights over the epochs from `start_epoch` on.

    The mean and the epochs it holds live in `path`, rewritten atomically after every epoch, so a
    run that dies and resumes goes on averaging where it stopped. An epoch already in the mean
    (the resumed run repeats the one the checkpoint missed) is not counted twice.
    """

    def __init__(self, layer_name: str, start_epoch: int, path: Path) -> None:
        super().__init__()
        self.layer_name, self.start_epoch, self.path = layer_name, start_epoch, Path(path)
        self.mean: list[np.ndarray] | None = None
        self.epochs: list[int] = []

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        if self.path.exists():
            self.mean, self.epochs = load_average(self.path)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if epoch < self.start_epoch or epoch in self.epochs:
            return
        weights = [
            w.astype(np.float64) for w in self.model.get_layer(self.layer_name).get_weights()
        ]
        if self.mean is None:
            self.mean = weights
        else:
            count = len(self.epochs)
            self.mean = [m + (w - m) / (count + 1) for m, w in zip(self.mean, weights, strict=True)]
        self.epochs.append(epoch)
        save_average(self.path, self.mean, self.epochs)
        log.info("weight average now holds epochs %d-%d", self.epochs[0] + 1, epoch + 1)


def save_average(path: Path, mean: list[np.ndarray], epochs: list[int]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = {f"weight_{i}": w for i, w in enumerate(mean)}
    np.savez(tmp, epochs=np.asarray(epochs, dtype=np.int64), **arrays)
    os.replace(tmp, path)


def load_average(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """The averaged weights, in `get_weights()` order, and the (0-based) epochs they average."""
    with np.load(path) as saved:
        count = len([key for key in saved.files if key.startswith("weight_")])
        return [saved[f"weight_{i}"] for i in range(count)], saved["epochs"].tolist()


def batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of `x`, the last one shorter if `len(x)` is not a multiple."""
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def recompute_batch_norm(
    model: keras.Model,
    images: np.ndarray,
    batch_size: int = 256,
    augment: keras.Layer | None = None,
) -> None:
    """Set every batch-norm layer's moving statistics to their mean over `images`.

    `augment`, run in training mode on each batch, makes them the statistics of the images the
    network trained on, as the SWA paper's `bn_update` does with its training loader. The layers
    after each norm learnt to read activations normalised that way: statistics of clean faces
    instead cost a run trained with random erasing several points of validation accuracy
    (docs/experiments.md, 2026-12-01).

    Each layer is run in training mode with its momentum set to n / (n + 1) at batch n, which turns
    its moving average into the plain mean over all batches. Dropout is switched off meanwhile, so
    the statistics are those of the network as it predicts.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    momenta, rates = [n.momentum for n in norms], [d.rate for d in dropouts]
    for dropout in dropouts:
        dropout.rate = 0.0
    try:
        for index, batch in enumerate(batches(images, batch_size)):
            for norm in norms:
                norm.momentum = index / (index + 1)
            if augment is not None:
                batch = augment(batch, training=True)
            model(batch, training=True)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for dropout, rate in zip(dropouts, rates, strict=True):
            dropout.rate = rate
