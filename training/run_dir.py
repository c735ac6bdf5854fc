"""The run directory: what a run leaves behind, and the record that lets it resume.

    run.json                    config, seed, data fingerprint; each session's epochs done
                                before it, code revision, machine and precision; training
                                time, best epoch, temperature, flip
    training_log.csv            one row per epoch (Keras CSVLogger)
    checkpoint/                 the last epoch's full state, for --resume
    trimmed_state.npz           or, in a run carried through git, its trimmed state instead
                                (`training.carry`): --resume starts from it where no
                                checkpoint/ exists yet
    best_classifier.weights.h5  the classifier at its best validation accuracy
    weight_average.npz          with train.swa_epochs: the running mean of the classifier's weights
    averaged_classifier.weights.h5  that mean with its batch norm recomputed: the one shipped
    emotion.onnx, metrics.json, *.png   the artifact and its evidence
    run.lock                    held by the process training in the directory, naming it

No Keras here: export, compare and the tests read a run without building anything.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from training.config import Config, config_from_dict, load_config
from training.data import ValidationSplit
from training.errors import RunError

RUN_FILE = "run.json"
LOG_FILE = "training_log.csv"
CHECKPOINT_DIR = "checkpoint"
BEST_WEIGHTS = "best_classifier.weights.h5"
WEIGHT_AVERAGE = "weight_average.npz"
AVERAGED_WEIGHTS = "averaged_classifier.weights.h5"
LOCK_FILE = "run.lock"
TRIMMED_STATE = "trimmed_state.npz"


def prepare_run_dir(out: Path, resume: bool) -> None:
    has_checkpoint = (out / CHECKPOINT_DIR).exists() or (out / TRIMMED_STATE).exists()
    if resume and not has_checkpoint:
        raise RunError(f"--resume: {out} holds no checkpoint or trimmed state to resume from")
    if not resume and (has_checkpoint or (out / RUN_FILE).exists()):
        raise RunError(f"{out} already holds a run: pass --resume to continue it, or another --out")
    out.mkdir(parents=True, exist_ok=True)


@contextmanager
def claimed(out: Path) -> Iterator[None]:
    """Hold `out` for this process while it trains, or refuse with the name of its holder.

    A run outlives the terminal that started it (a background run, a later session on the same
    machine), so a `--resume` can be started while it still goes on: two processes would then
    write one checkpoint and one run.json, each with its own schedule. The lock is the operating
    system's (flock): it ends with its process, so a killed run leaves nothing stale to clear.
    """
    with (out / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RunError(
                f"{out} is in use by a training run ({named_in(handle)}): wait for it to end, or "
                "stop it, before training in that directory again"
            ) from None
        handle.truncate(0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def holder(out: Path) -> str | None:
    """Which process trains in `out` now ("pid 4242 on host, since ..."), or None if none does.

    Asks the lock itself (a shared request, dropped at once), so a run killed without a word
    reads as not training, whatever its lock file still says.
    """
    path = out / LOCK_FILE
    if not path.exists():
        return None
    with path.open() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return named_in(handle)
    return None


def named_in(lock_file: TextIO) -> str:
    """The holder a lock file names (a process that died mid-claim may have left it blank)."""
    return lock_file.read().strip() or "another process"


def resumed_settings(
    out: Path, config_path: Path | None, seed: int | None, limit: int | None
) -> tuple[Config, int, int | None]:
    """The config, seed and limit a run started with, which its resumption must keep.

    Another config would silently mix two recipes in one model (and another split seed or limit
    would carve another validation split, leaking validation faces into training); another seed
    would switch the run's random streams mid-run: all are refused.
    """
    record = read_run_file(out)
    if not record:
        raise RunError(f"--resume: {out} has a checkpoint but no {RUN_FILE} saying how it started")
    recorded = {
        "--config": config_from_dict(record["config"]),
        "--seed": record["seed"],
        "--limit": record["limit"],
    }
    asked = {
        "--config": same_length(load_config(config_path), recorded["--config"])
        if config_path is not None
        else None,
        "--seed": seed,
        "--limit": limit,
    }
    changed = [flag for flag, value in asked.items() if value not in (None, recorded[flag])]
    if changed:
        raise RunError(
            f"--resume: {out} was started with another {', '.join(changed)}; a resumed run keeps "
            "its own, so leave them out (or start a new run with another --out)"
        )
    return recorded["--config"], recorded["--seed"], recorded["--limit"]


def same_length(config: Config, run: Config) -> Config:
    """`config` with `run`'s epochs, which `--epochs` may change on any run, resumed or not."""
    schedule = {"epochs": run.train.epochs, "warmup_epochs": run.train.warmup_epochs}
    return replace(config, train=replace(config.train, **schedule))


def read_run_file(out: Path) -> dict[str, Any]:
    """The run's record so far: empty before its first session writes it."""
    path = Path(out) / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def recorded(out: Path, key: str, default: Any) -> Any:
    """What an earlier session of this run wrote under `key` in its run.json, else `default`."""
    return read_run_file(out).get(key, default)


def write_run_file(out: Path, record: dict[str, Any]) -> None:
    """Merge `record` into run.json, atomically: a session killed mid-write leaves the old one."""
    path = out / RUN_FILE
    existing = read_run_file(out)
    existing.update(record)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(existing, indent=2, sort_keys=True))
    os.replace(tmp, path)


def run_validation_split(record: dict[str, Any]) -> ValidationSplit:
    """Which faces the run recorded in `record` held out, from which file."""
    return ValidationSplit.recorded(record["data"]["sha256"], record["config"], record)


def logged_epochs(out: Path) -> list[dict[str, str]]:
    """The rows of the run's epoch log, one per finished epoch over all its sessions."""
    path = out / LOG_FILE
    if not path.exists():
        return []
    with path.open() as handle:
        return [row for row in csv.DictReader(handle) if row]


def session_seed(out: Path, seed: int) -> int:
    """The run's seed, moved on by the epochs it has finished.

    The checkpoint holds weights and optimiser state but not the random generators' state, so
    a resumed session seeded like the first would replay the first session's shuffling and
    augmentation, batch for batch: a network that saw those exact images recently fits them from
    memory (train accuracy jumped 0.85 -> 0.89 in one epoch when that happened). The data split
    does not use this seed; it is carved from the run's own.
    """
    return seed + len(logged_epochs(out))


def best_logged_accuracy(out: Path) -> float:
    return max((float(row["val_accuracy"]) for row in logged_epochs(out)), default=-1.0)


def shipped_weights(run_dir: Path, config: Config) -> Path:
    """The classifier a run ships: its weight average when it has one, else its best epoch."""
    return Path(run_dir) / (AVERAGED_WEIGHTS if config.train.swa_epochs else BEST_WEIGHTS)
