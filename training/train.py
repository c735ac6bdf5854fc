"""The story of a training run: config, data, model, fit with checkpoints, then choose the shipped
prediction on validation (calibration, test-time flip), export and evaluate. What the run leaves
behind, and how it resumes, is in `training.run_dir`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from contract.emotion import LABELS
from contract.provenance import code_version, cpu_features, machine_description
from training.averaging import batches, load_average, recompute_batch_norm
from training.calibrate import fit_temperature
from training.callbacks import make_callbacks
from training.carry import restore_trimmed
from training.config import Config, load_config
from training.data import Dataset, Split, ValidationSplit, copies_of, load_dataset
from training.errors import RunError, TeacherError
from training.evaluate import evaluate_model
from training.export import MODEL_FILE, can_export, export_run, stamp_metrics
from training.model import (
    as_images,
    build_augmenter,
    float32_classifier,
    load_float32_classifier,
    logits_model,
    shipped_logits,
)
from training.optimizer import compiled_trainer, steps_per_epoch
from training.run_dir import (
    AVERAGED_WEIGHTS,
    CHECKPOINT_DIR,
    LOG_FILE,
    WEIGHT_AVERAGE,
    best_logged_accuracy,
    claimed,
    logged_epochs,
    prepare_run_dir,
    read_run_file,
    recorded,
    resumed_settings,
    run_validation_split,
    session_seed,
    shipped_weights,
    write_run_file,
)

log = logging.getLogger(__name__)

DEFAULT_SEED = 1337


# --- set-up -------------------------------------------------------------------------------------


def cpu_has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_features())


def choose_precision(requested: str) -> str:
    """mixed_bfloat16 where the hardware computes in it natively; float32 elsewhere.

    A CPU without AVX-512 BF16 or AMX emulates bfloat16: asked for anyway, it trains about 13x
    slower than in float32 (9.6 s against 0.7 s a batch of 64 on a 2-core AVX2 EPYC), so say so.
    """
    if requested == "mixed_bfloat16" and keras.backend.backend() != "jax" and not cpu_has_bf16():
        log.warning(
            "precision mixed_bfloat16 on a CPU without native bfloat16 (no avx512_bf16 or "
            "amx_bf16 in /proc/cpuinfo): emulated, about 13x slower than float32; "
            'train.precision = "auto" picks float32 here'
        )
    if requested != "auto":
        return requested
    if keras.backend.backend() == "jax":
        import jax  # deferred: installed only where Keras runs on it

        return "mixed_bfloat16" if jax.default_backend() == "gpu" else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def accelerator() -> str | None:
    """The device a JAX session trains on when it is not the CPU ("gpu: NVIDIA H200"): there the
    machine's CPU says little about the run. TensorFlow here always trains on the CPU."""
    if keras.backend.backend() != "jax":
        return None
    import jax  # deferred: installed only where Keras runs on it

    device = jax.devices()[0]
    return None if device.platform == "cpu" else f"{device.platform}: {device.device_kind}"


def class_weights(y: np.ndarray, power: float) -> np.ndarray:
    """(mean count / class count) ** power, per class: 0 ignores imbalance, 1 fully inverts it."""
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    return (counts.mean() / np.maximum(counts, 1)) ** power


def one_hot(y: np.ndarray) -> np.ndarray:
    return np.eye(len(LABELS), dtype=np.float32)[y]


def training_targets(
    config: Config, dataset: Dataset, split: ValidationSplit, out: Path
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """One-hot labels, or with `train.teacher` their mix with the teacher's probabilities, and
    what to record of the teacher. `split` is the faces this run holds out, which the teacher
    must not have trained on; a resumed run must find the very teacher it started with."""
    if not config.train.teacher:
        return one_hot(dataset.train.y), None
    # Deferred: the teacher runs on onnxruntime, which a GPU machine training on JAX need not have.
    from training.distill import distilled_targets, load_teacher

    teacher = load_teacher(Path(config.train.teacher), dataset.train, split)
    started_with = recorded(out, "teacher", None)
    if started_with and started_with["model_id"] != teacher.model_id:
        raise RunError(
            f"{out} started with the teacher {started_with['model_id'][:12]}… from "
            f"{started_with['path']}; {teacher.path} now holds {teacher.model_id[:12]}…, so the "
            "targets would change mid-run: point train.teacher at the original model's file"
        )
    labels = one_hot(dataset.train.y)
    targets = distilled_targets(labels, teacher.probabilities, config.train.distillation)
    return targets, teacher.record()


# --- after fitting: choose the shipped prediction on validation ---------------------------------


def average_classifier(config: Config, out: Path, train_images: np.ndarray) -> None:
    """Write the mean of the averaged epochs' weights, batch norm recomputed on the train faces
    augmented as in training (see `recompute_batch_norm`)."""
    classifier = float32_classifier(config)
    mean, epochs = load_average(out / WEIGHT_AVERAGE)
    classifier.set_weights(mean)
    recompute_batch_norm(
        classifier, as_images(train_images), augment=build_augmenter(config.augment)
    )
    classifier.save_weights(str(out / AVERAGED_WEIGHTS))
    log.info(
        "shipping the mean of epochs %d-%d (%d epochs)", epochs[0] + 1, epochs[-1] + 1, len(epochs)
    )


def validation_logits(
    classifier: keras.Model, x: np.ndarray, flip_tta: bool, batch_size: int = 256
) -> np.ndarray:
    """The shipped logits (see `model.shipped_logits`) of faces `x`, in batches."""
    logits_fn = logits_model(classifier)
    logits = [
        keras.ops.convert_to_numpy(shipped_logits(logits_fn, as_images(batch), flip_tta))
        for batch in batches(x, batch_size)
    ]
    return np.concatenate(logits).astype(np.float64)


def choose_prediction(
    config: Config, classifier: keras.Model, validation: Split, seen: Split
) -> dict[str, Any]:
    """Decide flip averaging and fit the softmax temperature, on validation only.

    The temperature is fitted on the validation faces that are not pixel copies of a training
    face (`seen`; 7-8 % of FER2013's held-out faces): the network recalls those with
    near-certainty, so they pull the temperature below what faces it has never seen need, and
    users never send them (`compare` leaves them out too; what the rule changed on a shipped
    model: docs/experiments.md, 2026-12-01). Flip averaging is still chosen on all of
    validation, so its accuracies compare with the curves'.
    """
    plain = validation_logits(classifier, validation.x, flip_tta=False)
    averaged = validation_logits(classifier, validation.x, flip_tta=True)
    accuracy_plain = float((plain.argmax(1) == validation.y).mean())
    accuracy_flip = float((averaged.argmax(1) == validation.y).mean())
    flip_tta = {"on": True, "off": False}.get(config.train.flip_tta, accuracy_flip > accuracy_plain)
    unseen = ~copies_of(seen, validation.x)
    logits = (averaged if flip_tta else plain)[unseen]
    temperature = fit_temperature(logits, validation.y[unseen]) if config.train.calibrate else 1.0
    log.info(
        "validation accuracy %.4f plain, %.4f with flip averaging -> flip_tta=%s; temperature "
        "%.3f, fitted on %d faces (%d copies of training faces left out)",
        accuracy_plain,
        accuracy_flip,
        flip_tta,
        temperature,
        int(unseen.sum()),
        int((~unseen).sum()),
    )
    return {
        "flip_tta": flip_tta,
        "temperature": temperature,
        "temperature_faces": int(unseen.sum()),
        "validation_accuracy_plain": accuracy_plain,
        "validation_accuracy_flip": accuracy_flip,
    }


# --- the run ------------------------------------------------------------------------------------


def train(
    data: Path,
    out: Path,
    config_path: Path | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    resume: bool = False,
    seed: int | None = None,
) -> Path | None:
    """From data to `out/emotion.onnx` with its evidence; returns the model's path, or None
    where the converter is missing (Keras on JAX on a GPU machine): the trained weights and the
    choices made on validation are then in `out`, ready for `python -m training export`.

    A new run takes `config_path` (default: the shipped recipe) and `seed` (default 1337); a
    resumed one goes on with the config, seed and limit it recorded when it started, on the very
    data file it started on.
    """
    out = Path(out)
    if resume:
        prepare_run_dir(out, resume)
        config, seed, limit = resumed_settings(out, config_path, seed, limit)
    else:
        config, seed = load_config(config_path), DEFAULT_SEED if seed is None else seed
    if epochs is not None:
        # A quick run with fewer epochs keeps the warm-up shorter than the run itself.
        warmup = min(config.train.warmup_epochs, max(epochs - 1, 0))
        overridden = replace(config.train, epochs=epochs, warmup_epochs=warmup)
        config = replace(config, train=overridden).validate()
    if config.train.teacher and not Path(config.train.teacher).is_file():
        raise TeacherError(f"train.teacher: no model file at {config.train.teacher}")
    if not resume:
        prepare_run_dir(out, resume)
    with claimed(out), dtype_policy_kept():
        return fit_and_ship(data, out, config, seed, limit, resume)


@contextmanager
def dtype_policy_kept() -> Iterator[None]:
    """Give Keras's global dtype policy back as it was: a run sets its own precision, and a
    caller that goes on in the same process (a test, a notebook) must not inherit bfloat16 from
    it, least of all from a run that stopped on an error."""
    policy = keras.mixed_precision.dtype_policy()
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(policy)


def fit_and_ship(
    data: Path, out: Path, config: Config, seed: int, limit: int | None, resume: bool
) -> Path | None:
    """The run itself, in a directory this process holds: see `train`."""
    if resume:
        # Another file, even the same faces unpacked, would carve another validation split.
        dataset = run_validation_split(read_run_file(out)).load(Path(data))
    else:
        dataset = load_dataset(
            Path(data), config.train.validation_fraction, config.train.split_seed, limit
        )
    log.info(
        "data %s (sha256 %s…): train %d, validation %d, test %d",
        data,
        dataset.sha256[:12],
        len(dataset.train),
        len(dataset.validation),
        len(dataset.test),
    )
    log.info("train per class: %s", dataset.train.class_counts())

    keras.utils.set_random_seed(session_seed(out, seed))
    precision = choose_precision(config.train.precision)
    keras.mixed_precision.set_dtype_policy(precision)
    log.info("Keras %s on %s, precision %s", keras.__version__, keras.backend.backend(), precision)

    split = ValidationSplit(
        dataset.sha256, config.train.split_seed, config.train.validation_fraction, limit
    )
    targets, teacher = training_targets(config, dataset, split, out)
    steps = steps_per_epoch(len(dataset.train), config)
    model = compiled_trainer(config, steps)
    log.info("model: %d parameters", model.count_params())
    # A run carried through git has a trimmed state and no checkpoint: start from the former.
    carried = resume and not (out / CHECKPOINT_DIR).exists()
    initial_epoch = restore_trimmed(out, model, steps) if carried else 0
    write_run_file(
        out,
        {
            "config": config.to_dict(),
            "seed": seed,
            "limit": limit,
            "data": {"source": str(data), "sha256": dataset.sha256},
            "teacher": teacher,
            # One entry per session: a run that spans sessions may go on with other code, on
            # other hardware, in another precision (float32 on AVX2, bfloat16 on AVX-512).
            "sessions": [
                *recorded(out, "sessions", []),
                {
                    "epochs_before": len(logged_epochs(out)),
                    "code_version": code_version(),
                    "machine": machine_description(),
                    "accelerator": accelerator(),
                    "precision": precision,
                    "backend": keras.backend.backend(),
                },
            ],
        },
    )

    weights = class_weights(dataset.train.y, config.train.class_weight_power)
    log.info("class weights: %s", dict(zip(LABELS, np.round(weights, 3).tolist(), strict=True)))
    model.fit(
        as_images(dataset.train.x),
        targets,
        sample_weight=weights[dataset.train.y].astype(np.float32),
        validation_data=(as_images(dataset.validation.x), one_hot(dataset.validation.y)),
        epochs=config.train.total_epochs,
        initial_epoch=initial_epoch,
        batch_size=config.train.batch_size,
        shuffle=True,
        callbacks=make_callbacks(config, out, best_logged_accuracy(out)),
        verbose=2 if not os.isatty(1) else 1,
    )

    if config.train.swa_epochs:
        average_classifier(config, out, dataset.train.x)
    classifier = load_float32_classifier(config, shipped_weights(out, config))
    prediction = choose_prediction(config, classifier, dataset.validation, dataset.train)
    write_run_file(
        out,
        {
            "prediction": prediction,
            "best_validation_accuracy": best_logged_accuracy(out),
        },
    )

    if not can_export():
        log.warning(
            "trained on %s; not exported: TensorFlow and tf2onnx are not installed here",
            keras.backend.backend(),
        )
        if (out / MODEL_FILE).exists():
            log.warning(
                "%s is an earlier session's export, without this session's epochs: export again",
                out / MODEL_FILE,
            )
        return None
    model_path = export_run(out, out, parity=dataset.test, validation=dataset.validation)
    metrics = evaluate_model(model_path, dataset.test, out, history=out / LOG_FILE)
    stamp_metrics(model_path, metrics)
    return model_path
