"""Config -> the compiled training model: the network behind its augmentation, with the run's
optimiser, learning-rate schedule and loss. What `train` fits, what a trimmed state is restored
into (`training.carry`), and what `python -m training speed` times."""

from __future__ import annotations

import keras

from training.averaging import ConstantAfter
from training.config import Config
from training.model import build_training_model


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimiser and its schedule, counted in steps: a resumed run that sets `iterations`
    finds the learning rate where the interrupted one left it."""
    t = config.train
    if t.schedule == "cosine":
        warmup = t.warmup_epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=t.learning_rate / 10 if warmup else t.learning_rate,
            decay_steps=t.epochs * steps_per_epoch - warmup,
            alpha=0.0,
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
        if t.swa_epochs:
            learning_rate = ConstantAfter(
                learning_rate, t.epochs * steps_per_epoch, t.swa_learning_rate
            )
    else:
        learning_rate = t.learning_rate
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate, momentum=t.momentum, nesterov=True, weight_decay=t.weight_decay
        )
    return keras.optimizers.AdamW(learning_rate, weight_decay=t.weight_decay)


def compiled_trainer(config: Config, steps_per_epoch: int) -> keras.Model:
    model = build_training_model(config.model, config.augment)
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def steps_per_epoch(train_faces: int, config: Config) -> int:
    return -(-train_faces // config.train.batch_size)
