"""What YuNet and BlazeFace share as detectors: one onnxruntime session loaded once, the metadata
its file carries, and the settings every detector takes.

Each subclass names its metadata type and how to get its file, checks that the network answers
as its metadata says, and decodes its own outputs. A missing, unreadable or foreign file is a
`DetectorError` that says what to do instead.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import onnxruntime as ort

from contract.detector import BoxCorrection, DetectorMetadataError
from service.faces import DetectorError, FaceBox, corrected_faces


class NetworkMetadata(Protocol):
    """What every detector network's metadata says beside how to decode it."""

    min_score: float
    nms_iou: float
    box_correction: BoxCorrection


Metadata = TypeVar("Metadata", bound=NetworkMetadata)


class NetworkDetector(Generic[Metadata]):
    """A face-detecting network, shared by every request: onnxruntime's `run` is safe to call
    from several threads, and at most `concurrent_runs` run at once.

    `max_side` and `min_face_pixels` mean what they mean for the Haar cascade: a face is reported
    when its side is at least `min_face_pixels` on a copy of the image shrunk to `max_side`.
    `correct_boxes=False` answers the network's own boxes, which the crop-margin measurement
    needs; the service always corrects them to frame a face as a Haar box does."""

    metadata_type: ClassVar[Any]
    """The `contract.detector` class whose `from_metadata` reads the file's metadata."""
    how_to_get: ClassVar[str]
    """What to do when the file is missing or wrong, for the error message."""

    def __init__(
        self,
        path: Path,
        *,
        max_side: int = 640,
        min_face_pixels: int = 24,
        intra_op_threads: int = 0,
        concurrent_runs: int = 1,
        correct_boxes: bool = True,
    ) -> None:
        path = Path(path)
        self.max_side = max_side
        self.min_face_pixels = min_face_pixels
        # onnxruntime's memory arena grows to the activations of all the runs in flight at once
        # and keeps them: 4 worker threads detecting together held ~70 MB more for good. More
        # runs at once than CPUs to run them buys nothing, so that is the limit.
        self._runs = threading.BoundedSemaphore(concurrent_runs)
        self._session = self._load_session(path, intra_op_threads)
        self.metadata: Metadata = self._read_metadata(path)
        correction = self.metadata.box_correction
        self._correction = (
            (correction.scale, correction.offset_x, correction.offset_y)
            if correct_boxes
            else (1.0, 0.0, 0.0)
        )
        self._check_network(path)

    def _faces(
        self, corners: Sequence[Sequence[float]], shape: tuple[int, int], max_faces: int | None
    ) -> list[FaceBox]:
        """The network's kept boxes (left, top, right, bottom in pixels of an image of `shape`)
        as every detector answers them: corrected squares, none smaller than `min_face_pixels`
        on the detection copy, largest first, at most `max_faces`."""
        shrunk = min(1.0, self.max_side / max(shape))
        smallest = self.min_face_pixels / shrunk
        return corrected_faces(corners, self._correction, smallest, shape, max_faces)

    def _check_network(self, path: Path) -> None:
        """Raise `DetectorError` when the network does not answer as its metadata says."""

    def _load_session(self, path: Path, intra_op_threads: int) -> ort.InferenceSession:
        if not path.is_file():
            raise DetectorError(f"no face detector at {path}: {self.how_to_get}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Its layers are small: threads that spin waiting for the next one take the CPU from
        # each other and from the rest of the machine (docs/experiments.md, "Serving threads").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise DetectorError(
                f"{path} is not a model onnxruntime can load ({error}); {self.how_to_get}"
            ) from error

    def _read_metadata(self, path: Path) -> Metadata:
        try:
            metadata: Metadata = self.metadata_type.from_metadata(
                self._session.get_modelmeta().custom_metadata_map
            )
        except DetectorMetadataError as error:
            raise DetectorError(f"{path}: {error}; {self.how_to_get}") from error
        return metadata
