"""The errors a user can act on: reported as one clear line and a non-zero exit, no traceback."""

from __future__ import annotations

from contract.emotion import ContractError, ModelError
from training.config import ConfigError
from training.data import DataError


class CompareError(Exception):
    """Models that cannot be compared fairly on validation, or a wrong data set for them."""


class DownloadError(Exception):
    """The Kaggle download cannot happen; the message says what to do."""


class RunError(Exception):
    """A run directory that cannot be started or resumed as asked."""


class TeacherError(Exception):
    """A distillation teacher that this run cannot learn from; the message says why."""


class EnsembleError(Exception):
    """Members that cannot be combined fairly (other validation faces, another contract), or an
    ensemble graph that failed its parity check; nothing was written."""


class ExportError(Exception):
    """The export failed a check (parity, contract); the model was not written."""


USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    CompareError,
    ContractError,
    DataError,
    DownloadError,
    EnsembleError,
    ExportError,
    ModelError,
    RunError,
    TeacherError,
)
