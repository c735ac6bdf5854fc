"""How fast this machine trains a recipe, in each precision: what a run's schedule must budget.

    python bench/training_speed.py [--config training/configs/default.toml] [--steps 40] \
        [--precision float32 --precision mixed_bfloat16]

Fits the recipe's own compiled training model (augmentation, optimiser, loss, batch size) for
`--steps` batches of synthetic faces, after one untimed pass that builds the graph, once per
precision, and prints seconds a step and the epoch that makes on FER2013's 25,838 training faces
(its training steps; the validation pass after it adds a few seconds).
By default it measures float32, and mixed_bfloat16 where the CPU computes it natively (AVX-512
BF16 or AMX): elsewhere bfloat16 is emulated, about 13x slower, and only measured when asked.
Nothing else should run meanwhile (pause a training run with `kill -STOP PID`, then `-CONT`).
It also prints the CPU seconds a step takes on both cores together: on a shared 2-vCPU machine
the wall time of the same code lands on one of a few levels from run to run at the same CPU
seconds (docs/experiments.md, 2026-12-02), so CPU time is the figure to compare code by, and
wall time the one a schedule budgets.
Writes bench/results/training_speed.{json,md}. Needs the training environment; takes about a
minute a precision on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serve_report import write_results  # noqa: E402

from contract.emotion import LABELS  # noqa: E402
from contract.provenance import machine_description  # noqa: E402
from training.config import DEFAULT_CONFIG, load_config  # noqa: E402
from training.model import as_images  # noqa: E402
from training.optimizer import compiled_trainer  # noqa: E402
from training.train import cpu_has_bf16, one_hot  # noqa: E402

FER2013_TRAINING_FACES = 25_838
"""train/ less the 10 % validation split: what one epoch of the shipped recipe trains on."""


def seconds_a_step(config_path: Path, precision: str, steps: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds (both cores together) of one training step."""
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


def markdown(header: str, results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| precision | s a step | s an epoch | against float32 | CPU s a step |",
        "|---|---|---|---|---|",
    ]
    float32 = results.get("float32", {}).get("seconds_a_step")
    for precision, r in results.items():
        speedup = f"{float32 / r['seconds_a_step']:.2f}x" if float32 else "-"
        lines.append(
            f"| {precision} | {r['seconds_a_step']:.3f} | {r['seconds_an_epoch']:.0f} | {speedup} "
            f"| {r['cpu_seconds_a_step']:.3f} |"
        )
    return header + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the recipe")
    parser.add_argument("--steps", type=int, default=40, help="timed batches a precision")
    parser.add_argument(
        "--precision",
        action="append",
        choices=["float32", "mixed_bfloat16"],
        help="repeat for several (default: float32, and mixed_bfloat16 where native)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    precisions = args.precision or ["float32", *(["mixed_bfloat16"] if cpu_has_bf16() else [])]
    batch = load_config(args.config).train.batch_size
    steps_an_epoch = int(np.ceil(FER2013_TRAINING_FACES / batch))
    results = {}
    for precision in precisions:
        step, cpu = seconds_a_step(args.config, precision, args.steps)
        results[precision] = {
            "seconds_a_step": round(step, 4),
            "seconds_an_epoch": round(step * steps_an_epoch, 1),
            "cpu_seconds_a_step": round(cpu, 4),
        }
        print(precision, results[precision], flush=True)
    header = (
        f"`{args.config.name}`, batch {batch}, {args.steps} timed steps a precision, an epoch "
        f"being {steps_an_epoch} steps; Keras {keras.__version__} on {keras.backend.backend()}, "
        f"{os.cpu_count()} CPUs: {machine_description()}."
    )
    write_results(
        args.out,
        "training_speed",
        {"config": args.config.name, "batch": batch, "steps": args.steps, "results": results},
        markdown(header, results),
    )


if __name__ == "__main__":
    main()
