"""Whether MODEL_PATH still holds the model being served.

The service reads the model file once, at start, and serves that model until it stops: a file
replaced or deleted under it (a deploy that swaps files, a cleanup) changes nothing it answers,
and a half-written file is never loaded. /model says when the file on disk is no longer the one
served, so an operator knows a restart is needed to serve the new one (or would fail).
"""

from __future__ import annotations

import hashlib
import os
from enum import StrEnum
from pathlib import Path


class ModelFileState(StrEnum):
    unchanged = "unchanged"
    """The file at MODEL_PATH is the one served (the same bytes)."""
    replaced = "replaced"
    """The file at MODEL_PATH now holds other bytes; the service still serves what it loaded."""
    missing = "missing"
    """No readable file at MODEL_PATH; the service still serves what it loaded."""


_hashed: dict[tuple[str, int, int, int, int], str] = {}
"""sha256 by (path, device, inode, size, modification time): a file that has not changed is
hashed once, however often /model is asked."""


def model_file_state(path: Path, served_sha256: str) -> ModelFileState:
    """Blocking (it may read the file): call it from a thread."""
    try:
        stat = os.stat(path)
        key = (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in _hashed:
            _hashed.clear()  # only the latest version of the file is worth remembering
            _hashed[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ModelFileState.missing
    if _hashed[key] == served_sha256:
        return ModelFileState.unchanged
    return ModelFileState.replaced
