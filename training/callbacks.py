"""What runs at each epoch's end: the checkpoint, the epoch log, the best classifier, the
weight average, the run's clock and the line a person watching the terminal reads."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras

from training.averaging import WeightAverage
from training.config import Config
from training.run_dir import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    LOG_FILE,
    WEIGHT_AVERAGE,
    recorded,
    write_run_file,
)

log = logging.getLogger(__name__)


def make_callbacks(config: Config, out: Path, best_so_far: float) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = []
    if config.train.swa_epochs:
        # Before the backup, so that a run dying between the two repeats an epoch already in the
        # average (which skips it) rather than one missing from it.
        callbacks.append(WeightAverage("classifier", config.train.epochs, out / WEIGHT_AVERAGE))
    callbacks += [
        keras.callbacks.BackupAndRestore(str(out / CHECKPOINT_DIR), delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(out / LOG_FILE), append=True),
        SaveBestClassifier(out / BEST_WEIGHTS, best_so_far),
        FitClock(out),
        EpochReport(config.train.total_epochs),
    ]
    if config.train.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, verbose=1)
        )
    if config.train.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=config.train.early_stopping_patience
            )
        )
    return callbacks


class SaveBestClassifier(keras.callbacks.Callback):
    """Keep the classifier's weights from the epoch with the best validation accuracy.

    Unlike ModelCheckpoint it starts from the best accuracy already logged, so a resumed run
    does not overwrite a better earlier epoch with its first one.
    """

    def __init__(self, path: Path, best: float) -> None:
        super().__init__()
        self.path, self.best = path, best

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        accuracy = (logs or {}).get("val_accuracy", -1.0)
        if accuracy > self.best:
            self.best = accuracy
            self.model.get_layer("classifier").save_weights(str(self.path))


class FitClock(keras.callbacks.Callback):
    """Add each finished epoch's time to the run's `fit_seconds`, as the epoch ends.

    Written once at the end, the sum lost every session that was killed before it finished (a
    run spanning sessions recorded 2 of its 4.6 hours); an epoch cut short is trained again on
    resume and counted then.
    """

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        total = recorded(self.out, "fit_seconds", 0.0) + time.monotonic() - self.started
        write_run_file(self.out, {"fit_seconds": round(total, 1)})


class EpochReport(keras.callbacks.Callback):
    """One line per epoch with the numbers that matter and the time left for the whole run."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.started, self.first_epoch = time.monotonic(), None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        if self.first_epoch is None:
            self.first_epoch = epoch
        done = epoch - self.first_epoch + 1
        per_epoch = (time.monotonic() - self.started) / done
        remaining = per_epoch * (self.epochs - epoch - 1)
        log.info(
            "epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  %.0f s/epoch  ETA %s",
            epoch + 1,
            self.epochs,
            logs.get("loss", float("nan")),
            logs.get("accuracy", float("nan")),
            logs.get("val_loss", float("nan")),
            logs.get("val_accuracy", float("nan")),
            per_epoch,
            time.strftime("%H:%M:%S", time.gmtime(remaining)),
        )
