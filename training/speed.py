"""How fast this machine trains a recipe, in each precision: what a run's schedule must budget.

`python -m training speed [--config C]` fits the recipe's own compiled training model
(augmentation, optimiser, loss, batch size) on synthetic faces for `--steps` batches, after one
untimed pass that builds the graph, once per precision, and prints seconds a step and the epoch
that makes on FER2013's training faces. By default it measures float32, and mixed_bfloat16 where
the CPU computes it natively (elsewhere bfloat16 is emulated, about 13x slower). Pause a training
run while it measures (`kill -STOP PID`, then `-CONT`).

CPU seconds are printed beside wall seconds: on a shared 2-vCPU machine the wall time of the same
code lands on one of a few levels from run to run (docs/experiments.md, 2026-12-02), so CPU time
is the figure to compare code by, and wall time the one a schedule budgets.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from contract.emotion import LABELS
from contract.provenance import machine_description
from training.config import load_config
from training.model import as_images
from training.optimizer import compiled_trainer, steps_per_epoch
from training.train import cpu_has_bf16, one_hot

FER2013_TRAINING_FACES = 25_838
"""train/ less the 10 % validation split: what one epoch of the shipped recipe trains on."""


def seconds_a_step(config_path: Path | None, precision: str, steps: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all cores together) of one training step."""
    config = load_config(config_path)
    batch = config.train.batch_size
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = compiled_trainer(config, steps_per_epoch=steps)
        rng = np.random.default_rng(0)
        faces = as_images(rng.integers(0, 256, (steps * batch, 48, 48), dtype=np.uint8))
        targets = one_hot(rng.integers(0, len(LABELS), steps * batch))
        model.fit(faces[:batch], targets[:batch], batch_size=batch, epochs=1, verbose=0)
        started, cpu_started = time.perf_counter(), time.process_time()
        model.fit(faces, targets, batch_size=batch, epochs=1, verbose=0)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return wall / steps, cpu / steps
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def training_speed(config_path: Path | None, steps: int, precisions: list[str] | None) -> None:
    """Print the recipe and machine, then a row a precision as each is measured."""
    config = load_config(config_path)
    precisions = precisions or ["float32", *(["mixed_bfloat16"] if cpu_has_bf16() else [])]
    epoch_steps = steps_per_epoch(FER2013_TRAINING_FACES, config)
    print(
        f"{config_path or 'the shipped recipe'}, batch {config.train.batch_size}, {steps} timed "
        f"steps a precision, {epoch_steps} steps an epoch; Keras {keras.__version__} on "
        f"{keras.backend.backend()}, {machine_description()}\n"
        "precision        s a step   s an epoch   CPU s a step",
        flush=True,
    )
    for precision in precisions:
        wall, cpu = seconds_a_step(config_path, precision, steps)
        print(f"{precision:<16} {wall:8.3f}   {wall * epoch_steps:10.0f}   {cpu:12.3f}", flush=True)
