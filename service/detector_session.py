"""A face detector network's onnxruntime session and the metadata its file carries, loaded once.

YuNet and BlazeFace load alike: a session with the service's thread budget and no spinning, and
metadata that says how to decode the network; a missing, unreadable or foreign file is a
`DetectorError` that says what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import onnxruntime as ort

from contract.detector import DetectorMetadataError
from service.faces import DetectorError

Metadata = TypeVar("Metadata")


def load_detector_session(
    path: Path,
    read_metadata: Callable[[Mapping[str, str]], Metadata],
    intra_op_threads: int,
    how_to_fix: str,
) -> tuple[ort.InferenceSession, Metadata]:
    """The session for the network at `path` and its metadata, read by `read_metadata`."""
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"no face detector at {path}: {how_to_fix}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Its layers are small: threads that spin waiting for the next one take the CPU from
    # each other and from the rest of the machine (docs/experiments.md, "Serving threads").
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        metadata = read_metadata(session.get_modelmeta().custom_metadata_map)
    except DetectorMetadataError as error:
        raise DetectorError(f"{path}: {error}; {how_to_fix}") from error
    except Exception as error:
        raise DetectorError(
            f"{path} is not a model onnxruntime can load ({error}); {how_to_fix}"
        ) from error
    return session, metadata
