"""Where a run stands, read from its directory alone: for a run that outlives its terminal.

A run of the long recipes spans hours or sessions, in the background; `python -m training
status --run DIR` says how far it is, how its validation accuracy goes, how long an epoch takes,
whether a process trains in it now, and what to type when none does. It reads run.json, the
epoch log and the lock, and builds nothing, so it answers in a moment beside a busy run.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from training.config import config_from_dict
from training.errors import RunError
from training.run_dir import RUN_FILE, holder, logged_epochs, read_run_file


def run_status(out: Path) -> str:
    record = read_run_file(out)
    if not record:
        raise RunError(
            f"{out} holds no run (no {RUN_FILE}): start one with `python -m training train`"
        )
    train = config_from_dict(record["config"]).train
    epochs = logged_epochs(out)
    done = len(epochs)
    phase = f"cosine {min(done, train.epochs)}/{train.epochs}"
    if train.swa_epochs:
        phase += f", averaging {max(done - train.epochs, 0)}/{train.swa_epochs}"
    lines = [f"{out}: epoch {done} of {train.total_epochs} ({phase})"]
    if epochs:
        best = max(range(done), key=lambda i: float(epochs[i]["val_accuracy"]))
        last = epochs[-1]
        per_epoch = record.get("fit_seconds", 0.0) / done
        pace = f"{per_epoch:.0f} s an epoch"
        if done < train.total_epochs:
            pace += f", about {per_epoch * (train.total_epochs - done) / 3600:.1f} h left"
        lines.append(
            f"validation accuracy {float(last['val_accuracy']):.4f} at the last epoch, best "
            f"{float(epochs[best]['val_accuracy']):.4f} at epoch {best + 1}; {pace}"
        )
    if "prediction" in record:
        prediction = record["prediction"]
        lines.append(
            f"finished: validation accuracy {prediction['validation_accuracy_flip']:.4f} with flip "
            f"averaging ({prediction['validation_accuracy_plain']:.4f} without), temperature "
            f"{prediction['temperature']:.3f}"
        )
    if (trainer := holder(out)) is not None:
        lines.append(f"training now: {trainer}")
    elif "prediction" not in record:
        data = shlex.quote(record["data"]["source"])
        lines.append(
            "not training: go on with `python -m training train "
            f"--data {data} --out {shlex.quote(str(out))} --resume`"
        )
    return "\n".join(lines)
