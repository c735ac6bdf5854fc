"""A run's trimmed resumable state: how a run longer than a working period crosses to the next
one through git, the only thing that outlives a machine here.

A full checkpoint (weights, optimiser momentum, weight average, all in float32) is about 23 MB for
the shipped network; the trimmed state keeps what a run cannot rebuild, in half precision:

    trimmed_state.npz        the training model's weights (float16) and the epoch they end
    weight_average.npz       with train.swa_epochs: the running mean so far (float16)
    best_classifier.npz      without: the best epoch's classifier (float16), the one shipped
    run.json, training_log.csv   the run's record and epoch log, as they are

SGD's momentum is left out: it is a decaying sum of recent gradients, rebuilt within a few dozen
steps, and the learning-rate schedule, counted in steps, resumes exactly. Whether resuming from
this state costs accuracy is measured, not assumed: see docs/experiments.md.

    python -m training trim --run RUN --to training/carried/NAME    # at the end of a period
    cp -r training/carried/NAME RUN && python -m training train --data D --out RUN --resume
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import keras
import numpy as np

from training.averaging import load_average, save_average
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
    logged_epochs,
    read_run_file,
)

log = logging.getLogger(__name__)

CARRIED_DIR = Path(__file__).parent / "carried"
"""Where trimmed states are committed, one folder a run; removed with the member's export."""
BEST_STATE = "best_classifier.npz"
MAX_CARRIED_BYTES = 10_000_000
"""A trimmed state over this is refused: git keeps every committed version for ever."""

KERAS_CHECKPOINT = "latest.weights.h5"
"""The file Keras's BackupAndRestore keeps in checkpoint/ (weights and optimiser together)."""


def half(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Floating arrays in float16, keyed in order; other dtypes (counters) as they are."""
    return {
        f"weight_{i}": a.astype(np.float16) if np.issubdtype(a.dtype, np.floating) else a
        for i, a in enumerate(arrays)
    }


def in_order(saved: np.lib.npyio.NpzFile) -> list[np.ndarray]:
    count = len([key for key in saved.files if key.startswith("weight_")])
    return [saved[f"weight_{i}"] for i in range(count)]


def trim(run_dir: Path, to: Path) -> Path:
    """Write `run_dir`'s last checkpoint, trimmed, into `to` (replacing what `to` held)."""
    record = read_run_file(run_dir)
    checkpoint = run_dir / CHECKPOINT_DIR / KERAS_CHECKPOINT
    if not record or not checkpoint.exists():
        raise RunError(f"{run_dir} holds no checkpoint to trim: has it finished an epoch?")
    config = config_from_dict(record["config"])
    epochs_done = len(logged_epochs(run_dir))
    keras.mixed_precision.set_dtype_policy("float32")
    model = compiled_trainer(config, steps_per_epoch=1)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(str(checkpoint))

    if to.exists():
        shutil.rmtree(to)
    to.mkdir(parents=True)
    np.savez(to / TRIMMED_STATE, epoch=np.int64(epochs_done), **half(model.get_weights()))
    for name in (RUN_FILE, LOG_FILE):
        shutil.copy2(run_dir / name, to / name)
    if (run_dir / WEIGHT_AVERAGE).exists():
        mean, averaged = load_average(run_dir / WEIGHT_AVERAGE)
        save_average(to / WEIGHT_AVERAGE, [m.astype(np.float16) for m in mean], averaged)
    if not config.train.swa_epochs and (run_dir / BEST_WEIGHTS).exists():
        classifier = model.get_layer("classifier")
        classifier.load_weights(str(run_dir / BEST_WEIGHTS))
        np.savez(to / BEST_STATE, **half(classifier.get_weights()))

    size = sum(path.stat().st_size for path in to.iterdir())
    if size > MAX_CARRIED_BYTES:
        shutil.rmtree(to)
        raise RunError(
            f"the trimmed state of {run_dir} is {size / 1e6:.1f} MB, over the "
            f"{MAX_CARRIED_BYTES / 1e6:.0f} MB a commit may carry: this network is too large to "
            "carry through git; finish it in one period"
        )
    log.info("trimmed %s at epoch %d into %s (%.1f MB)", run_dir, epochs_done, to, size / 1e6)
    return to


def restore_trimmed(out: Path, model: keras.Model, steps_per_epoch: int) -> int:
    """Put `out`'s trimmed state into the compiled `model`; returns the epoch to go on from.

    The optimiser's step count is set to the epochs done, so the schedule resumes where it was;
    its momentum starts from zero. The best classifier, where the run ships one, is written back
    as the checkpoint-era file that export reads.
    """
    with np.load(out / TRIMMED_STATE) as saved:
        epoch, weights = int(saved["epoch"]), in_order(saved)
    if epoch != len(logged_epochs(out)):
        raise RunError(
            f"{out}: its trimmed state ends at epoch {epoch} but its log holds "
            f"{len(logged_epochs(out))} epochs; trim the run again"
        )
    model.optimizer.build(model.trainable_variables)
    if (out / BEST_STATE).exists():
        classifier = model.get_layer("classifier")
        with np.load(out / BEST_STATE) as saved:
            classifier.set_weights([w.astype(np.float32) for w in in_order(saved)])
        classifier.save_weights(str(out / BEST_WEIGHTS))
    model.set_weights([w.astype(v.dtype) for w, v in zip(weights, model.weights, strict=True)])
    model.optimizer.iterations.assign(epoch * steps_per_epoch)
    log.info("resuming from the trimmed state after epoch %d (momentum rebuilt from zero)", epoch)
    return epoch
