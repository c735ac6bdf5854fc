"""Every choice of a training run, as plain values with defaults, overridden by a TOML file.

The defaults are the shipped recipe: `python -m training train` with no `--config` trains the
model in artifacts/ (a test holds them to the shipped model's own config). A config file lists
only what it changes, in four optional tables, `[model]`, `[augment]`, `[train]` and `[export]`,
whose keys are the fields below. Unknown keys and bad values are refused before any data is
read, so a typo costs a second, not a night of training. Why each value was chosen, with the
runs that measured it: docs/experiments.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.toml"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    filters: tuple[int, ...] = (40, 80, 160, 320)
    """Channels of each convolution stage; each stage ends in 2x2 max pooling. The 32-256 net
    plateaued short of capacity; this one (1.9M parameters) still fits the latency budget."""
    convs_per_stage: int | tuple[int, ...] = 2
    """3x3 convolutions in each stage: one number for all, or a list with one per stage."""
    stage_dropout: float = 0.1
    dense_units: int = 256
    """Width of the hidden dense layer after global average pooling (0: none)."""
    head_dropout: float = 0.4
    input_crop: int = 0
    """Side of the centre square of each 48x48 face that the network looks at (0: the whole face).
    The augmentation's random shift moves each training face under this fixed window, so training
    sees a different crop of each face and prediction the centre one; the convolutions then do
    (input_crop/48)^2 of the work, in training and in the service alike."""

    def stage_convs(self) -> tuple[int, ...]:
        if isinstance(self.convs_per_stage, int):
            return (self.convs_per_stage,) * len(self.filters)
        return tuple(self.convs_per_stage)


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    shift: float = 0.1
    """Largest translation, as a fraction of the image side."""
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    contrast: float = 0.2
    """Largest random contrast change (fraction); 0 turns it off."""
    erasing: float = 0.0
    """Share of images in which a random rectangle (`model.ERASED_AREA` of the image) is replaced
    by noise (Zhong et al., 2017: random erasing); it stands in for the occlusion FER2013 has
    little of. 0 turns it off."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 80
    """Epochs of the cosine schedule (after `warmup_epochs`); longer did not pay on this net."""
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "plateau"] = "cosine"
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    class_weight_power: float = 0.25
    """Class weights are (mean count / class count) ** power: 0 off, 1 full inverse frequency."""
    validation_fraction: float = 0.1
    split_seed: int = 1337
    """Seeds which faces are held out for validation, and nothing else (`--seed` seeds training):
    every member of an ensemble must hold out the same faces, so members differ only in the
    training seed, never in this one."""
    early_stopping_patience: int = 0
    """Epochs without validation-accuracy gain before stopping (0: never stop early)."""
    precision: Literal["auto", "float32", "mixed_bfloat16"] = "auto"
    """`auto`: mixed_bfloat16 where the CPU has AVX-512 BF16 or AMX (or on a GPU)."""
    calibrate: bool = True
    """Fit a softmax temperature on validation and fold it into the exported graph."""
    flip_tta: Literal["auto", "on", "off"] = "auto"
    """Average predictions over the image and its mirror; `auto` keeps it if validation gains."""
    swa_epochs: int = 40
    """Epochs after the cosine schedule at `swa_learning_rate`; the shipped classifier is then the
    mean of their end-of-epoch weights (stochastic weight averaging), which sits in a flatter part
    of the minimum than any epoch of a net that overfits. 0: ship the best epoch."""
    swa_learning_rate: float = 0.01
    """A fifth of the peak rate, as Izmailov et al. (2018) use for VGG-like nets."""
    teacher: str = ""
    """An exported model (ONNX) to distil from, validated on this run's split; "" for none. A
    relative path is taken from the directory the command runs in."""
    distillation: float = 0.5
    """With a teacher: the share of each training target that is the teacher's probabilities
    (the rest is the label; `training.distill`)."""

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.swa_epochs


@dataclass(frozen=True)
class ExportConfig:
    crop_margin: float = 1.05
    """Scale from a face detector's box to a FER2013-like crop, carried in the contract. Measured,
    not guessed: `python -m training crop-margin` finds a FER2013 crop 1.05x the Haar box,
    centred on it."""
    opset: int = 17
    quantize: Literal["none", "int8"] = "int8"
    """`int8`: static int8 convolutions, calibrated and checked on validation (~3x faster)."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> Config:
        m, a, t, e = self.model, self.augment, self.train, self.export
        checks = [
            (len(m.filters) >= 1 and all(f > 0 for f in m.filters), "model.filters: positive ints"),
            (len(m.filters) <= 5, "model.filters: at most 5 stages (48 px halves 5 times)"),
            (
                len(m.stage_convs()) == len(m.filters) and min(m.stage_convs()) >= 1,
                "model.convs_per_stage must be >= 1, or a list of those, one per stage",
            ),
            (0 <= m.stage_dropout < 1, "model.stage_dropout must be in [0, 1)"),
            (0 <= m.head_dropout < 1, "model.head_dropout must be in [0, 1)"),
            (m.dense_units >= 0, "model.dense_units must be >= 0"),
            (
                m.input_crop == 0 or (16 <= m.input_crop < 48 and m.input_crop % 2 == 0),
                "model.input_crop must be 0 (the whole face) or even and in [16, 48)",
            ),
            (0 <= a.shift < 0.5, "augment.shift must be in [0, 0.5)"),
            (0 <= a.rotation_degrees <= 45, "augment.rotation_degrees must be in [0, 45]"),
            (0 <= a.zoom < 0.5, "augment.zoom must be in [0, 0.5)"),
            (0 <= a.contrast < 1, "augment.contrast must be in [0, 1)"),
            (0 <= a.erasing <= 1, "augment.erasing must be in [0, 1]"),
            (t.epochs >= 1, "train.epochs must be >= 1"),
            (t.batch_size >= 1, "train.batch_size must be >= 1"),
            (t.optimizer in ("sgd", "adamw"), "train.optimizer must be 'sgd' or 'adamw'"),
            (t.learning_rate > 0, "train.learning_rate must be > 0"),
            (0 <= t.momentum < 1, "train.momentum must be in [0, 1)"),
            (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
            (t.schedule in ("cosine", "plateau"), "train.schedule must be 'cosine' or 'plateau'"),
            (0 <= t.warmup_epochs < t.epochs, "train.warmup_epochs must be in [0, epochs)"),
            (0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
            (0 <= t.class_weight_power <= 1, "train.class_weight_power must be in [0, 1]"),
            (0 < t.validation_fraction < 0.5, "train.validation_fraction must be in (0, 0.5)"),
            (t.early_stopping_patience >= 0, "train.early_stopping_patience must be >= 0"),
            (
                t.precision in ("auto", "float32", "mixed_bfloat16"),
                "train.precision must be 'auto', 'float32' or 'mixed_bfloat16'",
            ),
            (t.flip_tta in ("auto", "on", "off"), "train.flip_tta must be 'auto', 'on' or 'off'"),
            (t.swa_epochs >= 0, "train.swa_epochs must be >= 0"),
            (t.swa_learning_rate > 0, "train.swa_learning_rate must be > 0"),
            (
                not t.swa_epochs or (t.schedule == "cosine" and not t.early_stopping_patience),
                "train.swa_epochs needs schedule 'cosine' and no early stopping, so that the "
                "averaging starts where the schedule ends",
            ),
            (0 < t.distillation <= 1, "train.distillation must be in (0, 1]"),
            (0.5 <= e.crop_margin <= 3.0, "export.crop_margin must be in [0.5, 3.0]"),
            (13 <= e.opset <= 21, "export.opset must be in [13, 21]"),
            (e.quantize in ("none", "int8"), "export.quantize must be 'none' or 'int8'"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ConfigError("; ".join(errors))
        return self


SECTIONS = {
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "export": ExportConfig,
}


def _coerce(section: str, cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"[{section}] has unknown keys {unknown}; known keys: {sorted(known)}")
    defaults = cls()
    coerced = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        if key == "convs_per_stage" and isinstance(value, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{section}.{key} must hold integers, got {value!r}")
            value = tuple(value)
        elif isinstance(default, tuple):
            if not isinstance(value, list):
                raise ConfigError(f"{section}.{key} must be a list, got {value!r}")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{section}.{key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{section}.{key} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{section}.{key} must be a number, got {value!r}")
            value = float(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{section}.{key} must be a string, got {value!r}")
        coerced[key] = value
    return replace(defaults, **coerced)


def config_from_dict(raw: dict[str, Any]) -> Config:
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown tables {unknown}; known: {sorted(SECTIONS)}")
    for section, value in raw.items():
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] must be a table")
    parts = {name: _coerce(name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    return Config(**parts).validate()


def load_config(path: Path | None = None) -> Config:
    """Read a TOML config (the shipped default when `path` is None) over the built-in defaults."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"config file {path} does not exist") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    try:
        return config_from_dict(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
